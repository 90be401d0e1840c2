/**
 * bench/hundred's recovery site, in a process of its own inside the far namespace of the
 * emulated WAN: the product's ReplicaCycleServer (one long-lived staging daemon for every
 * replica) and its stream splice behind HTTPS with the site's certificate, as
 * bench/replication/recovery-process.ts, but listening on the WAN address and taking its
 * control calls (create, begin, commit, abort) over the same HTTPS, so that every round trip
 * of a cycle crosses the link as the peer API's do (its token check aside).
 *
 * Usage: node dist/bench/hundred/recovery-site.js DIR SITE_TLS_DIR HOST PORT
 * Prints one line `{"ready":true,"url":...}` when it listens; exits on POST /shutdown.
 */
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { pino } from 'pino';
import { ReplicaCycleServer } from '../../src/replication/replica-cycle-server.js';
import { ReplicaChain } from '../../src/replication/replica-chain.js';
import { acceptCycleStreams } from '../replication/bare-cycle-streams.js';
import { ensureSiteTls } from '../../src/sites/site-tls.js';

const KEEP_POINTS = 24; // the default of `mamori replication enable`
const [dir, tlsDir, host, port] = process.argv.slice(2) as [string, string, string, string];
const site = await ensureSiteTls({ dir: tlsDir, siteName: 'bench-b' });
const cycles = new ReplicaCycleServer({
  root: join(dir, 'replicas'),
  stagingDir: join(dir, 'staging'),
  // Warnings to stderr: a staging daemon killed or restarted under load is what to look for.
  log: pino({ level: 'warn', base: { site: 'recovery' } }, pino.destination(2)),
});
const chains = new Map<string, ReplicaChain>();

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  const text = Buffer.concat(parts).toString('utf8');
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

function chainOf(id: string): ReplicaChain {
  const c = chains.get(id);
  if (!c) throw new Error(`no replica ${id}`);
  return c;
}

async function handle(req: IncomingMessage): Promise<unknown> {
  const url = req.url ?? '';
  const b = await body(req);
  let m = /^\/replicas\/([\w-]+)$/.exec(url);
  if (m && req.method === 'PUT') {
    chains.set(
      m[1]!,
      await ReplicaChain.create(join(dir, 'replicas', m[1]!, 'disk0'), { virtualSize: Number(b['size']) }),
    );
    return null;
  }
  m = /^\/replicas\/([\w-]+)\/begin$/.exec(url);
  if (m) {
    await cycles.close(m[1]!);
    return cycles.serve(m[1]!, [chainOf(m[1]!)]);
  }
  m = /^\/replicas\/([\w-]+)\/cycles\/([\w-]+)\/commit$/.exec(url);
  if (m) {
    const [chain] = await cycles.end(m[1]!, m[2]!);
    const p = await chain!.commitCycle(b['meta'] as { time: string; consistency: 'crash' | 'application' }, {
      closedByDaemon: true,
    });
    await chain!.applyRetention(KEEP_POINTS, cycles.pointMerge);
    return { id: p.id, time: p.time, consistency: p.consistency, committedAt: p.committedAt };
  }
  m = /^\/replicas\/([\w-]+)\/abort$/.exec(url);
  if (m) {
    await cycles.close(m[1]!);
    return null;
  }
  if (url === '/shutdown') {
    await cycles.shutdown();
    setImmediate(() => process.exit(0));
    return null;
  }
  throw new Error(`no route ${req.method ?? ''} ${url}`);
}

function answer(res: ServerResponse, status: number, json: unknown): void {
  const text = JSON.stringify(json);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const https = createHttpsServer({ key: site.serverKeyPem, cert: site.serverCertPem }, (req, res) => {
  handle(req).then(
    (result) => answer(res, 200, { result }),
    (e: unknown) => answer(res, 500, { error: String((e as Error).message ?? e) }),
  );
});
acceptCycleStreams(https, cycles);
await new Promise<void>((r) => https.listen(Number(port), host, r));
process.stdout.write(`${JSON.stringify({ ready: true, url: `https://${host}:${port}` })}\n`);

/**
 * bench/replication's recovery site, in a process of its own as a real site is: the product's
 * ReplicaCycleServer (the long-lived staging daemon) behind an HTTPS server with the site's
 * certificate whose upgrade hands the connection to the product's spliceCycleStream, as the
 * site API does (its token check aside). Its own process matters: the source's TLS encryption
 * and this side's decryption run on two cores, as between two sites.
 *
 * Driven by JSON lines on stdin (`{n, op, ...}`), answered by JSON lines on stdout (`{n, ok,
 * result | error}`); the first line out is `{ready: true, url}`.
 * Usage: node dist/bench/replication/recovery-process.js DIR SITE_TLS_DIR
 */
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pino } from 'pino';
import { ReplicaCycleServer } from '../../src/replication/replica-cycle-server.js';
import { ReplicaChain } from '../../src/replication/replica-chain.js';
import { acceptCycleStreams } from './bare-cycle-streams.js';
import { ensureSiteTls } from '../../src/sites/site-tls.js';
import { DEFAULT_KEEP_POINTS } from '../../src/replication/replication-service.js';

const [dir, tlsDir] = process.argv.slice(2) as [string, string];
const site = await ensureSiteTls({ dir: tlsDir, siteName: 'bench-b' });
const cycles = new ReplicaCycleServer({
  root: join(dir, 'replicas'),
  stagingDir: join(dir, 'staging'),
  log: pino({ level: 'silent' }),
});
const chains = new Map<string, ReplicaChain>();

const https = createHttpsServer({ key: site.serverKeyPem, cert: site.serverCertPem });
acceptCycleStreams(https, cycles);
await new Promise<void>((r) => https.listen(0, '127.0.0.1', r));

type Command =
  | { n: number; op: 'create'; id: string; size: number }
  | { n: number; op: 'begin'; id: string }
  | {
      n: number;
      op: 'commit';
      id: string;
      cycleId: string;
      meta: { time: string; consistency: 'crash' | 'application' };
    }
  | { n: number; op: 'abort'; id: string }
  | { n: number; op: 'shutdown' };

async function run(c: Command): Promise<unknown> {
  switch (c.op) {
    case 'create':
      chains.set(c.id, await ReplicaChain.create(join(dir, 'replicas', c.id, 'disk0'), { virtualSize: c.size }));
      return null;
    case 'begin': {
      await cycles.close(c.id);
      return cycles.serve(c.id, [chains.get(c.id)!]);
    }
    case 'commit': {
      const [chain] = await cycles.end(c.id, c.cycleId);
      const p = await chain!.commitCycle(c.meta, { closedByDaemon: true });
      await chain!.applyRetention(DEFAULT_KEEP_POINTS, cycles.pointMerge);
      return { id: p.id, time: p.time, consistency: p.consistency, committedAt: p.committedAt };
    }
    case 'abort':
      await cycles.close(c.id);
      return null;
    case 'shutdown':
      await cycles.shutdown();
      https.close();
      setImmediate(() => process.exit(0));
      return null;
  }
}

const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
out({ ready: true, url: `https://127.0.0.1:${(https.address() as AddressInfo).port}` });
for await (const line of createInterface({ input: process.stdin })) {
  const c = JSON.parse(line) as Command;
  run(c).then(
    (result) => out({ n: c.n, ok: true, result }),
    (e: unknown) => out({ n: c.n, ok: false, error: String((e as Error).message ?? e) }),
  );
}
await cycles.shutdown();

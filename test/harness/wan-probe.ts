import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

/*
 * Plain-TCP probe for the WAN emulator's test (test/integration/wan/wan-link.test.ts), run
 * inside a site namespace: node dist/test/harness/wan-probe.js MODE HOST:PORT [ARG]
 *
 *   serve HOST:PORT          prints `listening`; each connection names its kind in a first line:
 *                            `echo` (echoes the rest) or `sink` (answers `{bytes,sha256}` at the end)
 *   rtt HOST:PORT COUNT      one byte echoed COUNT+1 times; prints {firstMs, rttMs[]} (firstMs
 *                            counts from connect(), so it holds the connection's setup too)
 *   bulk HOST:PORT BYTES     sends BYTES into a sink; prints {bytes, elapsedMs, cpuMs, sentSha256, reply}
 *                            (reply: {bytes, sha256, cpuMs} from the sink; cpuMs: each process's CPU time)
 *   hold HOST:PORT           one echo connection: each stdin line is sent, each echoed line
 *                            printed as `pong LINE`; `error CODE` when the connection fails
 *
 * A client that cannot connect prints {"error": CODE} and exits 2.
 */

function hostPort(s: string | undefined): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(s ?? '');
  if (!m) throw new Error(`HOST:PORT expected, got ${JSON.stringify(s)}`);
  return { host: m[1]!, port: Number(m[2]) };
}

function fail(e: Error & { code?: string }): never {
  process.stdout.write(`${JSON.stringify({ error: e.code ?? e.message })}\n`);
  process.exit(2);
}

function serve(addr: { host: string; port: number }): void {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    let head = Buffer.alloc(0);
    let kind: 'echo' | 'sink' | null = null;
    const hash = createHash('sha256');
    const cpu0 = process.cpuUsage();
    let bytes = 0;
    const body = (chunk: Buffer): void => {
      if (kind === 'echo') s.write(chunk);
      else {
        hash.update(chunk);
        bytes += chunk.length;
      }
    };
    s.on('data', (chunk: Buffer) => {
      if (kind) return body(chunk);
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl < 0) return;
      kind = head.subarray(0, nl).toString() === 'sink' ? 'sink' : 'echo';
      if (head.length > nl + 1) body(head.subarray(nl + 1));
    });
    s.on('end', () => {
      if (kind === 'sink') s.end(`${JSON.stringify({ bytes, sha256: hash.digest('hex'), cpuMs: cpuMs(cpu0) })}\n`);
      else s.end();
    });
    s.on('error', () => s.destroy());
  });
  server.listen(addr.port, addr.host, () => process.stdout.write('listening\n'));
}

/** CPU time (user + system) this process spent since `from`, in ms. */
function cpuMs(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return (d.user + d.system) / 1000;
}

function open(addr: { host: string; port: number }): Socket {
  const s = connect({ host: addr.host, port: addr.port, noDelay: true, allowHalfOpen: true });
  s.on('error', fail);
  return s;
}

async function rtt(addr: { host: string; port: number }, count: number): Promise<void> {
  const t0 = performance.now();
  const s = open(addr);
  const echoes: (() => void)[] = [];
  s.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length; i++) echoes.shift()?.();
  });
  const ping = (prefix = ''): Promise<void> =>
    new Promise((resolve) => {
      echoes.push(resolve);
      s.write(`${prefix}x`);
    });
  await ping('echo\n');
  const firstMs = performance.now() - t0;
  const rttMs: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await ping();
    rttMs.push(performance.now() - t);
  }
  s.end();
  process.stdout.write(`${JSON.stringify({ firstMs, rttMs })}\n`);
}

/**
 * Sends `total` bytes of a pattern in which every 4 KiB block carries its own index, so a
 * reordered, lost or repeated block changes the hash the sink answers with.
 */
async function bulk(addr: { host: string; port: number }, total: number): Promise<void> {
  const base = randomBytes(1 << 20);
  const sent = createHash('sha256');
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const s = open(addr);
  let reply = '';
  const answered = new Promise<void>((resolve) => {
    s.setEncoding('utf8');
    s.on('data', (c: string) => (reply += c));
    s.on('end', () => resolve());
  });
  s.write('sink\n');
  let offset = 0;
  while (offset < total) {
    const chunk = Buffer.from(base.subarray(0, Math.min(base.length, total - offset)));
    for (let at = 0; at + 8 <= chunk.length; at += 4096) chunk.writeBigUInt64BE(BigInt(offset + at), at);
    sent.update(chunk);
    offset += chunk.length;
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await answered;
  const elapsedMs = performance.now() - t0;
  process.stdout.write(
    `${JSON.stringify({ bytes: total, elapsedMs, cpuMs: cpuMs(cpu0), sentSha256: sent.digest('hex'), reply: JSON.parse(reply) as unknown })}\n`,
  );
}

function hold(addr: { host: string; port: number }): void {
  const s = connect({ host: addr.host, port: addr.port, noDelay: true });
  s.on('error', (e: Error & { code?: string }) => {
    process.stdout.write(`error ${e.code ?? e.message}\n`);
    process.exit(2);
  });
  s.on('connect', () => process.stdout.write('connected\n'));
  s.write('echo\n');
  createInterface({ input: s }).on('line', (l) => process.stdout.write(`pong ${l}\n`));
  createInterface({ input: process.stdin }).on('line', (l) => s.write(`${l}\n`));
  process.stdin.on('end', () => s.end());
}

// `node --test dist/test/` runs every file under test/ as a test file, this program too, with
// no arguments: it has nothing to test then. The harness always starts it with arguments.
if (process.argv.length <= 2) process.exit(0);
const [mode, target, arg] = process.argv.slice(2);
const addr = hostPort(target);
if (mode === 'serve') serve(addr);
else if (mode === 'rtt') await rtt(addr, Number(arg ?? 5));
else if (mode === 'bulk') await bulk(addr, Number(arg));
else if (mode === 'hold') hold(addr);
else throw new Error(`unknown mode ${mode}`);

/**
 * bench/wire: what CompressedStream (src/sites/compressed-stream.ts) costs and saves, over a real
 * TCP loopback socket pair, against the same bytes sent on a bare socket in the same run.
 * Writes bench/results/wire.json. Run by hand (not part of the suite):
 *   npx tsc -p tsconfig.json && node dist/bench/wire/compress.js
 *
 * Links: `loopback` (as fast as the two processes' CPU allows), `1gbit` and `100mbit`: the
 * receiving process reads its socket no faster than 125 or 12.5 MB/s (the kernel buffers in
 * front of it fill, as behind a WAN link; no added delay). Data: `incompressible` (random bytes, the write log's default payload) and
 * `compressible` (write-log records in the text mode, about 2.8x with lz4).
 * Environment: BENCH_WIRE_MIB (MiB per run on loopback and 1gbit, default 256), BENCH_WIRE_LINK_MIB (100mbit, 48).
 * No TLS here: the lead's upgraded connection adds the same TLS cost to every variant.
 */
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { compressSync, uncompressSync } from 'lz4-napi';
import { encodeRecord } from '../../src/guest/writelog-format.js';
import { CompressedStream, type WireCompressionMode } from '../../src/sites/compressed-stream.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { median, type BenchFigure } from '../bench-common.js';

const MiB = 1024 * 1024;
const LOOPBACK_MIB = Number(process.env['BENCH_WIRE_MIB'] ?? 256);
const LINK_MIB = Number(process.env['BENCH_WIRE_LINK_MIB'] ?? 48);
const LINK_BYTES_PER_S: Record<Link, number> = { loopback: 0, '1gbit': 125e6, '100mbit': 12.5e6 };
const CHUNK = MiB; // what the NBD client writes per request, about
const RUNS = 3;

type Variant = 'plain' | WireCompressionMode;
type Link = 'loopback' | '1gbit' | '100mbit';
type Data = 'incompressible' | 'compressible';

const log = (s: string): void => void process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
const r3 = (x: number): number => Number(x.toFixed(3));

function pools(): Record<Data, Buffer> {
  const recs: Buffer[] = [];
  for (let seq = 1; seq <= 16 * 256; seq++)
    recs.push(
      encodeRecord(
        { seq, timeNs: BigInt(Date.now()) * 1_000_000n, bootId: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' },
        'text',
      ),
    );
  return { incompressible: randomBytes(64 * MiB), compressible: Buffer.concat(recs) };
}

/**
 * The receiving end, in its own process as at a peer site: accepts one connection, reads `total`
 * payload bytes (decoding frames unless plain), at most at the link rate when one is given (it
 * reads its socket no faster, so the kernel buffers in front of it fill, as behind a slow WAN
 * link), then answers one byte and exits.
 */
async function receiver(framed: boolean, total: number, bytesPerS: number): Promise<void> {
  const server = createServer((sock: Socket) => {
    server.close();
    const started = Date.now();
    let wire = 0;
    sock.on('data', (c: Buffer) => {
      wire += c.length;
      if (bytesPerS <= 0) return;
      const wait = started + (wire / bytesPerS) * 1000 - Date.now();
      if (wait > 1) {
        sock.pause();
        setTimeout(() => sock.resume(), wait);
      }
    });
    const reader = framed ? new CompressedStream(sock) : sock;
    reader.on('error', () => undefined);
    let got = 0;
    reader.on('data', (c: Buffer) => {
      got += c.length;
      if (got === total) reader.end('k');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  process.stdout.write(`${(server.address() as { port: number }).port}\n`);
}

interface RunResult {
  seconds: number;
  wireBytes: number;
  framesCompressed: number;
  framesRaw: number;
}

async function oneRun(variant: Variant, link: Link, pool: Buffer, total: number): Promise<RunResult> {
  const rate = LINK_BYTES_PER_S[link];
  const child = spawn(
    process.execPath,
    [SELF, '--receiver', variant === 'plain' ? 'plain' : 'framed', String(total), String(rate)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const [line] = (await once(child.stdout.setEncoding('utf8'), 'data')) as [string];
    const sock = connect(Number(line.trim()), '127.0.0.1');
    await once(sock, 'connect');
    const writer = variant === 'plain' ? sock : new CompressedStream(sock, { mode: variant });
    const answered = new Promise<void>((resolve, reject) => {
      writer.once('data', () => resolve());
      writer.once('error', reject);
    });
    const started = process.hrtime.bigint();
    for (let sent = 0; sent < total; sent += CHUNK) {
      const off = sent % pool.length;
      if (!writer.write(pool.subarray(off, off + CHUNK))) await once(writer, 'drain');
    }
    await answered;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const c = writer instanceof CompressedStream ? writer.counters : null;
    writer.destroy();
    return {
      seconds,
      wireBytes: c?.wireBytesOut ?? total,
      framesCompressed: c?.framesCompressed ?? 0,
      framesRaw: c?.framesRaw ?? 0,
    };
  } finally {
    if (child.exitCode === null) child.kill();
  }
}

/** Median of RUNS runs per variant, the variants interleaved so a busy moment on the machine hits all of them. */
async function measureAll(
  link: Link,
  kind: Data,
  pool: Buffer,
): Promise<Map<Variant, { mibps: number; wirePerByte: number; r: RunResult }>> {
  const total = (link === '100mbit' ? LINK_MIB : LOOPBACK_MIB) * MiB;
  const variants: Variant[] = ['plain', 'none', 'auto', 'lz4'];
  const runs = new Map<Variant, RunResult[]>(variants.map((v) => [v, []]));
  for (let i = 0; i < RUNS; i++) for (const v of variants) runs.get(v)!.push(await oneRun(v, link, pool, total));
  const out = new Map<Variant, { mibps: number; wirePerByte: number; r: RunResult }>();
  for (const v of variants) {
    const rs = runs.get(v)!;
    const mibps = median(rs.map((r) => total / MiB / r.seconds));
    const r = rs[rs.length - 1]!;
    log(
      `${link} ${kind} ${v}: ${mibps.toFixed(1)} MiB/s (runs ${rs.map((x) => (total / MiB / x.seconds).toFixed(0)).join(' ')}), wire ${(r.wireBytes / total).toFixed(3)} B/B, frames lz4 ${r.framesCompressed} raw ${r.framesRaw}`,
    );
    out.set(v, { mibps, wirePerByte: r.wireBytes / total, r });
  }
  return out;
}

/** lz4 alone on 1 MiB frames, in MiB/s of input: what "links slower than the compressor" means here. */
function codecSpeed(pool: Buffer): { compress: number; decompress: number; ratio: number } {
  const frames = 64;
  const inPool = Math.floor(pool.length / MiB);
  const packed: Buffer[] = [];
  let t = process.hrtime.bigint();
  for (let i = 0; i < frames; i++)
    packed.push(compressSync(pool.subarray((i % inPool) * MiB, ((i % inPool) + 1) * MiB)));
  const cs = Number(process.hrtime.bigint() - t) / 1e9;
  t = process.hrtime.bigint();
  for (const p of packed) uncompressSync(p);
  const ds = Number(process.hrtime.bigint() - t) / 1e9;
  const wire = packed.reduce((n, p) => n + p.length, 0);
  return { compress: frames / cs, decompress: frames / ds, ratio: (frames * MiB) / wire };
}

const SELF = fileURLToPath(import.meta.url);
if (process.argv[2] === '--receiver') {
  await receiver(process.argv[3] === 'framed', Number(process.argv[4]), Number(process.argv[5]));
} else {
  await main();
}

async function main(): Promise<void> {
  const data = pools();
  const figures: BenchFigure[] = [];
  const fig = (f: BenchFigure): void => {
    figures.push(f);
    process.stdout.write(`${JSON.stringify(f)}\n`);
  };

  for (const kind of ['incompressible', 'compressible'] as const) {
    const s = codecSpeed(data[kind]);
    log(
      `lz4 on ${kind}: compress ${s.compress.toFixed(0)} MiB/s, decompress ${s.decompress.toFixed(0)} MiB/s, ratio ${s.ratio.toFixed(2)}`,
    );
    fig({
      metric: `lz4_compress_mib_per_s_${kind}`,
      value: r3(s.compress),
      unit: 'MiB/s',
      baseline: null,
      ratio: null,
      goal: 'report',
      met: null,
    });
    fig({
      metric: `lz4_decompress_mib_per_s_${kind}`,
      value: r3(s.decompress),
      unit: 'MiB/s',
      baseline: null,
      ratio: null,
      goal: 'report',
      met: null,
    });
    fig({
      metric: `lz4_ratio_${kind}`,
      value: r3(s.ratio),
      unit: 'ratio',
      baseline: null,
      ratio: null,
      goal: 'report',
      met: null,
    });
  }

  for (const link of ['loopback', '1gbit', '100mbit'] as const) {
    for (const kind of ['incompressible', 'compressible'] as const) {
      const all = await measureAll(link, kind, data[kind]);
      const plain = all.get('plain')!;
      for (const variant of ['none', 'auto', 'lz4'] as const) {
        const m = all.get(variant)!;
        // On loopback both ends are CPU-bound on a shared host: a report; the goal is for links.
        const goal = kind === 'incompressible' && variant !== 'lz4' && link !== 'loopback' ? '>= 0.95' : 'report';
        const ratio = m.mibps / plain.mibps;
        fig({
          metric: `${link}_${kind}_${variant}_throughput_vs_plain_socket`,
          value: r3(m.mibps),
          unit: 'MiB/s',
          baseline: r3(plain.mibps),
          ratio: r3(ratio),
          goal,
          met: goal === 'report' ? null : ratio >= 0.95,
          wireBytesPerByte: r3(m.wirePerByte),
          framesCompressed: m.r.framesCompressed,
          framesRaw: m.r.framesRaw,
        });
        if (link === '100mbit' && variant === 'auto')
          fig({
            metric: `wire_bytes_per_changed_byte_${kind}`,
            value: r3(m.wirePerByte),
            unit: 'ratio',
            baseline: r3(plain.wirePerByte),
            ratio: r3(m.wirePerByte / plain.wirePerByte),
            goal: kind === 'incompressible' ? '<= 1.001' : 'report',
            met: kind === 'incompressible' ? m.wirePerByte / plain.wirePerByte <= 1.001 : null,
          });
      }
    }
  }

  const result = { name: 'wire', machine: '2 cores, shared', date: new Date().toISOString(), figures };
  await writeFile(join(repoRoot, 'bench', 'results', 'wire.json'), `${JSON.stringify(result, null, 2)}\n`);
  log('wrote bench/results/wire.json');
}

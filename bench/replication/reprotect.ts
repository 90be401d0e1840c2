/**
 * bench/replication/reprotect.ts: what the first reverse cycle of a reprotect costs, by delta
 * (the recovered VM's bitmap from the point on, plus the old disks' own bitmap after a
 * disaster) against the checksum resync reprotect did before, in the same run on the same
 * disks. Called by run.ts; `node dist/bench/replication/reprotect.js` runs it alone and
 * merges its rows into bench/results/replication.json, leaving the other rows as they are.
 *
 * Real QEMU throughout. Site A (old protected site) holds the VM's old disk: a 1 GiB qcow2
 * full of random data (its replication bitmap `mamori-5` recording since its last point).
 * Site B recovered the VM from that point: an overlay on a copy of the point, with the
 * `mamori-0` bitmap VmRecovery adds, run by a QEMU (paused, no guest: the block layer is
 * all a cycle touches) into which 32 MiB are written through qemu-io. After a disaster A's
 * disk also took 16 MiB of its own after the point (qemu-io on the closed image: the
 * bitmap counts them, as it would the guest's). Writes are 256 KiB runs at 64 KiB-aligned
 * places. The reverse replica at A is a ReplicaChain seeded with A's disk, served by a
 * storage daemon over NBD+TLS; the cycle is runReplicationCycle, with the seed's delta from
 * seedDiskDelta / seedSides as the site server passes it. The baseline is the same cycle
 * with no bitmap to trust (the resync reprotect ran before): both disks hashed whole.
 *
 * Bytes read: what the source read from its disk (copies and hashing) plus what the replica
 * side read to hash its seed. Bytes sent: NBD WRITE payloads. Both replicas are compared
 * with the VM's disk afterwards (qemu-img compare): a figure from a wrong copy is refused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runProcess } from '../../src/core/run-process.js';
import { NbdClient } from '../../src/nbd/nbd-client.js';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { StorageDaemon } from '../../src/qemu/storage-daemon.js';
import { chunkDigests } from '../../src/replication/block-checksums.js';
import { bitmapName, editImageBitmap } from '../../src/replication/dirty-bitmaps.js';
import { ReplicaChain, type ChainLayer } from '../../src/replication/replica-chain.js';
import { serveStaging } from './staging-export.js';
import type { CycleTarget } from '../../src/replication/replica-cycle-server.js';
import type { ReplicaPointView } from '../../src/replication/replica-service.js';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { CompressedStream } from '../../src/sites/compressed-stream.js';
import { runReplicationCycle, type CycleResult, type RemoteReplica } from '../../src/replication/replication-cycle.js';
import { seedDiskDelta, seedSides } from '../../src/replication/seed-delta.js';
import { ensureSiteTls, type SiteTls } from '../../src/sites/site-tls.js';
import { repoRoot } from '../../test/harness/repo-root.js';

const MiB = 1024 * 1024;
const SIZE = 1024 * MiB;
const RUN = 256 * 1024;
const B_RUNS = 128; // 32 MiB written by the recovered VM
const A_RUNS = 64; // 16 MiB written by the old site after its last point (disaster)
const OLD_GENERATION = 5;

export interface ReprotectFigure {
  metric: string;
  value: number;
  unit: string;
  baseline: number | null;
  ratio: number;
  goal: string;
  met: boolean;
  [k: string]: unknown;
}

type Log = (s: string) => void;
const r3 = (x: number): number => Number(x.toFixed(3));

/** Distinct 64 KiB-aligned run offsets, deterministic, none overlapping `avoid`. */
function runOffsets(count: number, seed: number, avoid: ReadonlySet<number>): number[] {
  const slots = SIZE / RUN;
  const out = new Set<number>();
  let x = seed >>> 0 || 1;
  while (out.size < count) {
    // xorshift32: exact in 32-bit integers (an LCG in doubles loses its low bits and cycles).
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    // 64 KiB alignment within a slot, so runs straddle 256 KiB boundaries as real writes do.
    const off = (x % slots) * RUN + ((x >>> 16) % 3) * 64 * 1024;
    if (off + RUN > SIZE || [...out, ...avoid].some((o) => Math.abs(o - off) < RUN)) continue;
    out.add(off);
  }
  return [...out];
}

/** The old site's side of the reverse replica, as ReplicaService does it (without the database), counting what its checksums read. */
class SeededReplica implements RemoteReplica {
  #daemon: StorageDaemon | null = null;
  #reader: StorageDaemon | null = null;
  #relay: Server | null = null;
  #parents: ChainLayer[] = [];
  #n = 0;
  readonly counter = { bytesRead: 0 };
  constructor(
    private dir: string,
    readonly chain: ReplicaChain,
  ) {}

  async beginCycle(): Promise<CycleTarget> {
    await this.abortCycle();
    const staging = await this.chain.beginCycle();
    this.#parents = staging.layers.slice(0, -1);
    const { daemon } = await serveStaging(this.dir, staging.layers);
    this.#daemon = daemon;
    return { cycleId: `cyc${++this.#n}`, exports: ['disk0'] };
  }

  /**
   * A cycle's stream is framed (compressed-stream.ts) at both ends: a relay on a unix socket
   * plays the recovery site's end, unframing into the staging daemon's socket.
   */
  async openStream(): Promise<Socket> {
    const relay = join(this.dir, 'relay.sock');
    if (this.#relay === null) {
      this.#relay = createServer((client) => {
        const wire = new CompressedStream(client, { mode: 'none' });
        const daemon = createConnection({ path: join(this.dir, 'sd-nbd.sock') });
        wire.pipe(daemon).pipe(wire);
        const cut = (): void => {
          client.destroy();
          daemon.destroy();
        };
        for (const x of [wire, daemon, client]) x.on('error', cut).on('close', cut);
      });
      await new Promise<void>((r) => this.#relay!.listen(relay, r));
    }
    const s = createConnection({ path: relay });
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
    return s;
  }

  close(): void {
    this.#relay?.close();
  }

  async commitCycle(
    _cycleId: string,
    meta: { time: string; consistency: 'crash' | 'application' },
  ): Promise<ReplicaPointView> {
    await this.#stopReader();
    const d = this.#daemon!;
    this.#daemon = null;
    await d.stop();
    const p = await this.chain.commitCycle(meta);
    return { id: p.id, time: p.time, consistency: p.consistency, committedAt: p.committedAt };
  }

  /** Digests of the point staging starts from (the seed), hashed here as ReplicaService.checksums does. */
  async checksums(
    _cycleId: string,
    _disk: number,
    range: { offset: number; length: number },
    chunkSize: number,
  ): Promise<Buffer> {
    const socket = join(this.dir, 'rd-nbd.sock');
    if (this.#reader === null) {
      this.#reader = await StorageDaemon.start({
        qmpSocket: join(this.dir, 'rd-qmp.sock'),
        pidFile: join(this.dir, 'rd.pid'),
        chains: [{ id: 'point0', layers: this.#parents, readOnly: true }],
        nbd: { listen: { type: 'unix', path: socket } },
        exports: [{ id: 'point0', node: 'point0', name: 'point0' }],
      });
    }
    const client = await NbdClient.connect(
      { socketPath: socket },
      { exportName: 'point0', metaContexts: ['base:allocation'] },
    );
    try {
      return await chunkDigests(client, range, chunkSize, { counter: this.counter });
    } finally {
      await client.disconnect().catch(() => undefined);
    }
  }

  async abortCycle(): Promise<void> {
    await this.#stopReader();
    const d = this.#daemon;
    this.#daemon = null;
    if (d) await d.kill().catch(() => undefined);
    if (this.chain.staging) await this.chain.discardCycle().catch(() => undefined);
  }

  async #stopReader(): Promise<void> {
    const r = this.#reader;
    this.#reader = null;
    if (r) await r.kill().catch(() => undefined);
  }
}

/** The recovered VM at site B: a QEMU as mamori starts one (paused, TCG, no guest), disk0 on its overlay. */
class RecoveredVm {
  private constructor(
    readonly child: ChildProcess,
    readonly qmp: QmpClient,
  ) {}

  static async start(dir: string, image: string): Promise<RecoveredVm> {
    const sock = join(dir, 'qmp.sock');
    const child = spawn(
      'qemu-system-x86_64',
      [
        '-machine',
        'q35',
        '-accel',
        'tcg',
        '-smp',
        '1',
        '-m',
        '128M',
        '-nodefaults',
        '-no-user-config',
        '-display',
        'none',
        '-S',
        '-chardev',
        `socket,id=qmp,path=${sock},server=on,wait=off`,
        '-mon',
        'chardev=qmp,mode=control',
        '-blockdev',
        JSON.stringify({ driver: 'file', filename: image, 'node-name': 'disk0-file', discard: 'unmap' }),
        '-blockdev',
        JSON.stringify({ driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0', discard: 'unmap' }),
        '-device',
        'virtio-blk-pci,drive=disk0,id=disk0-dev',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    try {
      return new RecoveredVm(child, await QmpClient.connect(sock, { connectTimeoutMs: 5_000, retryUntilMs: 15_000 }));
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
  }

  async write(offset: number, pattern: number): Promise<void> {
    const out = (await this.qmp.execute(
      'human-monitor-command',
      {
        'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "write -q -P ${pattern} ${offset} ${RUN}"`,
      },
      { timeoutMs: 120_000 },
    )) as string;
    if (/error|fail|cannot/i.test(out)) throw new Error(`qemu-io: ${out}`);
  }

  async stop(): Promise<void> {
    await this.qmp.execute('quit', undefined, { timeoutMs: 10_000 }).catch(() => undefined);
    await this.qmp.close().catch(() => undefined);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
      const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
  }
}

interface Measured {
  result: CycleResult;
  bytesRead: number;
}

async function reverseCycle(
  vm: RecoveredVm,
  dir: string,
  name: string,
  seedFile: string,
  sites: { src: SiteTls; dst: SiteTls },
  seed: Parameters<typeof runReplicationCycle>[0]['seed'],
): Promise<Measured> {
  const rdir = join(dir, name);
  await mkdir(rdir, { recursive: true });
  const chain = await ReplicaChain.create(join(rdir, 'disk0'), {
    virtualSize: SIZE,
    seed: [{ file: seedFile, format: 'qcow2' }],
  });
  const remote = new SeededReplica(rdir, chain);
  try {
    const result = await runReplicationCycle({
      source: { kind: 'live', qmp: vm.qmp, nodes: ['disk0'] },
      workDir: join(rdir, 'work'),
      previousGeneration: 0,
      remote,
      seed,
    });
    return { result, bytesRead: result.bytesRead + remote.counter.bytesRead };
  } finally {
    await remote.abortCycle();
    remote.close();
  }
}

/** Refuses a figure from a wrong copy: the reverse replica's newest point must read as the VM's disk (headers carry the backing names). */
async function sameAs(image: string, chainTop: string): Promise<void> {
  await runProcess('qemu-img', ['compare', '-U', '-q', '-f', 'qcow2', '-F', 'qcow2', image, chainTop], {
    timeoutMs: 600_000,
  });
}

async function scenario(
  kind: 'planned' | 'disaster',
  dir: string,
  sites: { src: SiteTls; dst: SiteTls },
  log: Log,
): Promise<ReprotectFigure[]> {
  const sdir = join(dir, kind);
  await mkdir(sdir, { recursive: true });
  // Site A's disk: 1 GiB of random data (64 MiB of it, at 16 places: each chunk's digest differs anyway).
  const old = join(sdir, 'old.qcow2');
  const rand = join(sdir, 'rand.bin');
  await writeFile(rand, randomBytes(64 * MiB));
  await runProcess('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'cluster_size=131072,extended_l2=on',
    old,
    String(SIZE),
  ]);
  await runProcess(
    'qemu-io',
    [
      '-f',
      'qcow2',
      old,
      ...Array.from({ length: SIZE / (64 * MiB) }, (_, i) => ['-c', `write -q -s ${rand} ${i * 64 * MiB} 64M`]).flat(),
    ],
    { timeoutMs: 600_000 },
  );
  await rm(rand);
  // The point both sites hold; site A's bitmap counts from it.
  const pointAt = new Date().toISOString();
  const point = join(sdir, 'point.qcow2');
  await runProcess('cp', ['--sparse=always', old, point]);
  await editImageBitmap(old, bitmapName(OLD_GENERATION), [{ op: 'add' }]);
  // Site B: the recovered VM's overlay on the point, with the bitmap VmRecovery adds.
  const overlay = join(sdir, 'recovered.qcow2');
  await runProcess('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'cluster_size=131072,extended_l2=on',
    '-b',
    point,
    '-F',
    'qcow2',
    overlay,
  ]);
  await editImageBitmap(overlay, bitmapName(0), [{ op: 'add' }]);

  const bOffsets = runOffsets(B_RUNS, kind === 'planned' ? 17 : 23, new Set());
  const aOffsets = kind === 'disaster' ? runOffsets(A_RUNS, 91, new Set(bOffsets)) : [];
  if (aOffsets.length > 0) {
    // The old site's VM ran on after its last point: writes its bitmap counts.
    await runProcess(
      'qemu-io',
      ['-f', 'qcow2', old, ...aOffsets.flatMap((o) => ['-c', `write -q -P 51 ${o} ${RUN}`])],
      { timeoutMs: 600_000 },
    );
  }
  const vm = await RecoveredVm.start(sdir, overlay);
  try {
    for (const [i, o] of bOffsets.entries()) await vm.write(o, (i % 200) + 7);
    await vm.qmp.execute(
      'human-monitor-command',
      { 'command-line': 'qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "flush"' },
      { timeoutMs: 60_000 },
    );
    const changed = (bOffsets.length + aOffsets.length) * RUN;
    log(
      `${kind}: ${(bOffsets.length * RUN) / MiB} MiB written by the recovered VM, ${(aOffsets.length * RUN) / MiB} MiB by the old site after the point`,
    );

    // Ours: the old site's delta as ReplicaSeeding records it, the sides as ReplicationService passes them.
    const delta = await seedDiskDelta([{ file: old, format: 'qcow2' }], {
      generation: OLD_GENERATION,
      lastPointAt: pointAt,
    });
    const ours = await reverseCycle(vm, sdir, 'delta', old, sites, seedSides({ disks: [delta] }, pointAt, 1));
    if (ours.result.mode !== 'incremental')
      throw new Error(`${kind}: expected an incremental reverse cycle, got ${ours.result.mode}`);
    await sameAs(overlay, await newestTop(join(sdir, 'delta', 'disk0')));
    log(
      `${kind} by delta: ${ours.result.bytesSent / MiB} MiB sent, ${(ours.bytesRead / MiB).toFixed(1)} MiB read, ${ours.result.durationMs} ms`,
    );
    // Baseline: the checksum resync (no bitmap to trust: mamori-0 is gone after the cycle above).
    const resync = await reverseCycle(vm, sdir, 'resync', old, sites, null);
    if (resync.result.mode !== 'resync')
      throw new Error(`${kind}: expected the baseline to resync, got ${resync.result.mode}`);
    await sameAs(overlay, await newestTop(join(sdir, 'resync', 'disk0')));
    log(
      `${kind} by checksums: ${resync.result.bytesSent / MiB} MiB sent, ${(resync.bytesRead / MiB).toFixed(1)} MiB read, ${resync.result.durationMs} ms`,
    );

    const sent = ours.result.bytesSent / changed;
    const sentBase = resync.result.bytesSent / changed;
    const read = ours.bytesRead / SIZE;
    const readBase = resync.bytesRead / SIZE;
    const common = {
      workload: `1 GiB disk of random data; ${(bOffsets.length * RUN) / MiB} MiB written by the recovered VM${aOffsets.length ? `, ${(aOffsets.length * RUN) / MiB} MiB by the old site after the point` : ''}, in 256 KiB runs at 64 KiB-aligned places`,
      changedBytes: changed,
      diskBytes: SIZE,
      measuredAt: new Date().toISOString(),
    };
    return [
      {
        metric: `reprotect_${kind}_bytes_sent_per_changed_byte`,
        value: r3(sent),
        unit: 'ratio',
        baseline: r3(sentBase),
        ratio: r3(sent / sentBase),
        goal: '<= 1.2',
        met: sent <= 1.2,
        ...common,
        bytesSent: ours.result.bytesSent,
        baselineBytesSent: resync.result.bytesSent,
        durationMs: ours.result.durationMs,
        baselineDurationMs: resync.result.durationMs,
        baselineMethod:
          'the same first reverse cycle as a checksum resync (1 MiB chunks hashed at both sites), what reprotect did before',
      },
      {
        metric: `reprotect_${kind}_bytes_read_per_disk_byte`,
        value: r3(read),
        unit: 'ratio',
        baseline: r3(readBase),
        ratio: r3(read / readBase),
        goal: '<= 0.1',
        met: read <= 0.1,
        ...common,
        bytesRead: ours.bytesRead,
        baselineBytesRead: resync.bytesRead,
        note: "bytes read from the disks at both sites (the recovered VM's for copies and hashing, the old one's for hashing) over the disk size",
      },
    ];
  } finally {
    await vm.stop();
  }
}

async function newestTop(chainDir: string): Promise<string> {
  const m = JSON.parse(await readFile(join(chainDir, 'manifest.json'), 'utf8')) as { points: { file: string }[] };
  return join(chainDir, m.points.at(-1)!.file);
}

export async function reprotectFigures(log: Log): Promise<ReprotectFigure[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-reprotect-'));
  try {
    const sites = {
      src: await ensureSiteTls({ dir: join(dir, 'site-b'), siteName: 'bench-b' }),
      dst: await ensureSiteTls({ dir: join(dir, 'site-a'), siteName: 'bench-a' }),
    };
    return [...(await scenario('planned', dir, sites, log)), ...(await scenario('disaster', dir, sites, log))];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// Alone: measure and merge the reprotect rows into the committed results, leaving the others.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const log: Log = (s) => void process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
  const rows = await reprotectFigures(log);
  for (const f of rows) process.stdout.write(`${JSON.stringify(f)}\n`);
  const file = join(repoRoot, 'bench', 'results', 'replication.json');
  const results = JSON.parse(await readFile(file, 'utf8')) as { figures: ReprotectFigure[] };
  results.figures = [...results.figures.filter((f) => !f.metric.startsWith('reprotect_')), ...rows];
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  log('merged the reprotect rows into bench/results/replication.json');
}

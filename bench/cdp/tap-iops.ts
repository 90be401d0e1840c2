/**
 * What continuous replication's tap costs the guest: diskbench's random 4 KiB writes (O_DIRECT,
 * queue depth 1) in the test guest, on a qcow2 disk with no tap, then with QEMU 7.2's
 * write-blocking mirror onto mamori's NBD server over a unix socket, with three receivers:
 *
 *   qemu-null QEMU's own null-co node as the mirror's target: what the write-blocking mirror
 *             costs with no socket and no other process (the floor of this mechanism)
 *   null      answers each write at once: the round trip through the mirror and Node alone
 *   queued    appends each write to the write journal and answers once it is queued, in order
 *             (the journal writes and syncs its batches behind)
 *   durable   appends and answers once the record is on stable storage (cdp/journal-receiver.ts,
 *             what the tap runs today)
 *   blklogwrites-file
 *             no mirror: QEMU's blklogwrites filter between the guest's device and its disk,
 *             logging each write (header sector and data) into a local file; it must be in the
 *             command line from the start (7.2 cannot insert a filter under a running device)
 *   mirror-blklogwrites
 *             the write-blocking mirror onto a blklogwrites node over null-co in the same QEMU:
 *             an ordered log of the guest's writes that can be attached to a running VM
 *             (cdp/qemu-write-log.ts, no checkpoints)
 *   qemu-write-log-1s
 *             the same with a checkpoint every second (a flush of the log node and a drain)
 *
 * Each VM is started paused (vm-argv's -S), the tap attached, then resumed, so every write the
 * benchmark makes goes through the tap. Variants run in turns, `rounds` times; the figure is the
 * median of each. This measures the mechanism before the product is wired onto it: it is what
 * `cdp_write_iops_vs_unprotected` will be made of.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildVmArgv } from '../../src/qemu/vm-argv.js';
import type { VmArgvInput } from '../../src/qemu/vm-argv-input.js';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { runProcess } from '../../src/core/run-process.js';
import { serveNbd, type NbdExportBackend } from '../../src/nbd/nbd-server.js';
import { WriteJournal } from '../../src/cdp/write-journal.js';
import { JournalReceiver } from '../../src/cdp/journal-receiver.js';
import { mirrorOnto, startWriteBlockingMirror } from '../../src/cdp/write-blocking-mirror.js';
import { QemuWriteLog } from '../../src/cdp/qemu-write-log.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { median, waitFor } from '../bench-common.js';

export type TapVariant =
  | 'unprotected'
  | 'qemu-null'
  | 'null'
  | 'queued'
  | 'durable'
  | 'blklogwrites-file'
  | 'mirror-blklogwrites'
  | 'qemu-write-log-1s';
export const TAP_VARIANTS: readonly TapVariant[] = [
  'unprotected',
  'qemu-null',
  'null',
  'queued',
  'durable',
  'blklogwrites-file',
  'mirror-blklogwrites',
  'qemu-write-log-1s',
];

/** vm-argv's command line with a blklogwrites node between the device and disk0. */
function withLogWrites(argv: string[], logFile: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (argv[i - 1] === '-device' && a.includes('drive=disk0,')) {
      out.push(a.replace('drive=disk0,', 'drive=cdp-log,'));
      continue;
    }
    out.push(a);
    if (argv[i - 1] === '-blockdev' && (JSON.parse(a) as { 'node-name': string })['node-name'] === 'disk0')
      out.push(
        '-blockdev',
        JSON.stringify({
          driver: 'blklogwrites',
          'node-name': 'cdp-log',
          file: 'disk0',
          log: { driver: 'file', filename: logFile },
        }),
      );
  }
  return out;
}

const DISK_BYTES = 128 * 1024 * 1024;

/** Answers every write at once and keeps nothing: the floor of what any receiver costs. */
class NullReceiver implements NbdExportBackend {
  constructor(readonly size: number) {}
  read(): Promise<Buffer> {
    return Promise.reject(new Error('not read'));
  }
  write(): Promise<void> {
    return Promise.resolve();
  }
  writeZeroes(): Promise<void> {
    return Promise.resolve();
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
}

/** Appends in arrival order and answers once queued; a failed append is counted, not answered late. */
class QueuedReceiver implements NbdExportBackend {
  failures = 0;
  constructor(
    readonly size: number,
    private readonly journal: WriteJournal,
  ) {}
  read(): Promise<Buffer> {
    return Promise.reject(new Error('not read'));
  }
  write(offset: number, data: Buffer): Promise<void> {
    this.journal.appendWrite(offset, data).catch(() => (this.failures += 1));
    return Promise.resolve();
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    this.journal.appendZero(offset, length).catch(() => (this.failures += 1));
    return Promise.resolve();
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
}

async function listen(path: string, backend: NbdExportBackend): Promise<{ server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    serveNbd(s, { exports: new Map([['disk0', backend]]) });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return { server, sockets };
}

/** One boot of the test guest in diskbench mode with the variant's tap; its random-write IOPS. */
export async function measureTapIops(
  variant: TapVariant,
  opts: { mib: number; seconds: number; accel: 'tcg' | 'kvm' },
): Promise<{ iops: number; journalRecords: number | null; logBytes: number | null; checkpoints: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-cdp-'));
  const disk = join(dir, 'd0.qcow2');
  await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(DISK_BYTES)]);
  const guest = join(repoRoot, '.cache', 'guest');
  const input: VmArgvInput = {
    def: {
      id: '6f1c2b1e-0000-4000-8000-00000000cd01',
      name: `cdp-${variant}`,
      vcpus: 1,
      memoryMiB: 256,
      firmware: 'bios',
      machineType: 'pc-q35-7.2',
      nics: [],
      boot: { kind: 'test-guest', writelogRate: 0, acpi: true, diskbench: { mib: opts.mib, seconds: opts.seconds } },
    },
    disks: [
      {
        id: 'disk-0',
        kind: 'image',
        format: 'qcow2',
        path: disk,
        rdmMode: null,
        shared: false,
        overlays: [],
      },
    ],
    paths: {
      qmpSocket: join(dir, 'qmp.sock'),
      pidFile: join(dir, 'qemu.pid'),
      serialLog: join(dir, 'serial.log'),
      uefiVars: join(dir, 'vars.fd'),
    },
    accel: opts.accel,
    testGuest: { kernel: join(guest, 'vmlinuz'), initrd: join(guest, 'initrd.img') },
    ovmfCode: null,
  };
  let qmp: QmpClient | null = null;
  let pid: number | null = null;
  let listener: { server: Server; sockets: Set<Socket> } | null = null;
  let journal: WriteJournal | null = null;
  let ticker: NodeJS.Timeout | null = null;
  let checkpointing = false;
  let checkpoints = 0;
  try {
    if (variant === 'blklogwrites-file')
      await runProcess('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'log'), '0']);
    const argv =
      variant === 'blklogwrites-file' ? withLogWrites(buildVmArgv(input), join(dir, 'log')) : buildVmArgv(input);
    await runProcess('qemu-system-x86_64', argv, { timeoutMs: 60_000 });
    pid = Number((await readFile(join(dir, 'qemu.pid'), 'utf8')).trim());
    qmp = await QmpClient.connect(join(dir, 'qmp.sock'), { connectTimeoutMs: 5000, retryUntilMs: 15_000 });
    if (variant === 'mirror-blklogwrites' || variant === 'qemu-write-log-1s') {
      const log = await QemuWriteLog.attach({ qmp, device: 'disk0', sizeBytes: DISK_BYTES, logPath: join(dir, 'log') });
      if (variant === 'qemu-write-log-1s')
        ticker = setInterval(() => {
          if (checkpointing) return;
          checkpointing = true;
          log
            .checkpoint()
            .then(() => (checkpoints += 1))
            .catch(() => undefined) // the guest powers off at the end: the last one may find QEMU gone
            .finally(() => (checkpointing = false));
        }, 1000);
    } else if (variant === 'qemu-null') {
      await qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'cdp-null', size: DISK_BYTES });
      await mirrorOnto(qmp, { device: 'disk0', jobId: 'cdp-disk0', target: 'cdp-null' });
    } else if (variant === 'null' || variant === 'queued' || variant === 'durable') {
      const socketPath = join(dir, 'tap.sock');
      if (variant !== 'null') journal = await WriteJournal.open(join(dir, 'journal'));
      const backend =
        variant === 'null'
          ? new NullReceiver(DISK_BYTES)
          : variant === 'queued'
            ? new QueuedReceiver(DISK_BYTES, journal!)
            : new JournalReceiver(journal!, DISK_BYTES);
      listener = await listen(socketPath, backend);
      await startWriteBlockingMirror(qmp, { device: 'disk0', jobId: 'cdp-disk0', socketPath, exportName: 'disk0' });
    }
    await qmp.execute('cont');
    const line = await waitFor(
      `diskbench of ${variant}`,
      async () => {
        const text = await readFile(join(dir, 'serial.log'), 'utf8').catch(() => '');
        return /mamori-guest diskbench dev=\S+ (?:size_mib|error)=.*$/m.exec(text)?.[0];
      },
      600_000,
      1000,
    );
    const iops = /rand_write_iops=([\d.]+)/.exec(line)?.[1];
    if (iops === undefined) throw new Error(`diskbench failed under ${variant}: ${line}`);
    // The guest powers off after its benchmark, taking the mirror with it.
    // What the tap kept, as evidence it saw the writes: journal records, or the bytes of the log file.
    return {
      iops: Number(iops),
      journalRecords: journal === null ? null : journal.index.count,
      logBytes: variant.includes('log') ? (await stat(join(dir, 'log'))).size : null,
      checkpoints,
    };
  } finally {
    if (ticker !== null) clearInterval(ticker);
    await qmp?.close().catch(() => undefined);
    if (pid !== null) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone: the guest powers off after its benchmark */
      }
    }
    for (const s of listener?.sockets ?? []) s.destroy();
    if (listener !== null) await new Promise<void>((r) => listener!.server.close(() => r()));
    await journal?.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every variant `rounds` times, in turns; the median IOPS of each. */
export async function tapIopsByVariant(opts: {
  rounds: number;
  mib: number;
  seconds: number;
  accel: 'tcg' | 'kvm';
}): Promise<Record<TapVariant, { median: number; runs: number[] }>> {
  const runs = new Map<TapVariant, number[]>(TAP_VARIANTS.map((v) => [v, []]));
  for (let r = 0; r < opts.rounds; r++) {
    // Reverse the order every other round: a machine that warms up or slows down over the run
    // then favours no variant.
    const order = r % 2 === 0 ? TAP_VARIANTS : [...TAP_VARIANTS].reverse();
    for (const v of order) {
      const { iops } = await measureTapIops(v, opts);
      runs.get(v)!.push(iops);
      console.log(`round ${r + 1} ${v}: ${iops} IOPS`);
    }
  }
  const out = {} as Record<TapVariant, { median: number; runs: number[] }>;
  for (const [v, xs] of runs) out[v] = { median: median(xs), runs: xs };
  return out;
}

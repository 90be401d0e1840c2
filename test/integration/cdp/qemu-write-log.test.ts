import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { mkdtemp, open, readFile, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { buildVmArgv } from '../../../src/qemu/vm-argv.js';
import { QmpClient } from '../../../src/qemu/qmp-client.js';
import { QemuWriteLog } from '../../../src/cdp/qemu-write-log.js';
import { WriteLogReader } from '../../../src/cdp/write-log-format.js';
import { parseSerialAcks, verifyWriteLog } from '../../../src/guest/writelog-verifier.js';
import { killPausedQemu, startPausedQemu, type PausedQemu } from '../../harness/paused-qemu.js';
import { repoRoot } from '../../harness/repo-root.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/*
 * Continuous replication's tap as QEMU writes it (cdp/qemu-write-log.ts): a write-blocking
 * mirror onto blklogwrites. The log holds each write in order with its data, and a checkpoint's
 * prefix, replayed over the disk the log started from, is the disk at an instant: checked
 * against qemu-io's writes, then against a booted guest's write log at 200 records a second.
 */
describe('QemuWriteLog', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-qwl-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Applies entries [reader.next, end) to a raw image: the replica side of the log, in miniature. */
  async function replay(reader: WriteLogReader, end: number, image: string): Promise<string[]> {
    const kinds: string[] = [];
    const fh = await open(image, 'r+');
    try {
      for await (const e of reader.readTo(end)) {
        kinds.push(e.kind === 'write' ? `write ${e.offset}+${e.data.length}` : e.kind);
        if (e.kind === 'write') await fh.write(e.data, 0, e.data.length, e.offset);
        else if (e.kind === 'discard') await fh.write(Buffer.alloc(e.length), 0, e.length, e.offset);
      }
    } finally {
      await fh.close();
    }
    return kinds;
  }

  it("logs each write in order with its data; a checkpoint's prefix replays to the disk as it was", async () => {
    const SIZE = 8 * MiB;
    const disk = join(dir, 'd.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(SIZE)]);
    let vm: PausedQemu | null = null;
    try {
      vm = await startPausedQemu(
        dir,
        [
          { driver: 'file', filename: disk, 'node-name': 'disk0-file' },
          { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
        ],
        ['virtio-blk-pci,drive=disk0,id=disk0-dev'],
      );
      const qmp = vm.qmp;
      const io = async (cmd: string): Promise<void> => {
        const out = await qmp.execute('human-monitor-command', {
          'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "${cmd}"`,
        });
        assert.equal(out, '', String(out));
      };
      const log = await QemuWriteLog.attach({ qmp, device: 'disk0', sizeBytes: SIZE, logPath: join(dir, 'd0.log') });
      // Nothing written yet: QEMU skips the flush and writes no superblock; the prefix is empty.
      assert.equal((await log.checkpoint()).entries, 0);
      await io('write -P 1 0 64k');
      await io('write -P 2 32k 8k'); // over the first: order matters
      await io('write -z 16k 4k');
      await io('flush'); // the guest's own flush: not in the log
      const first = await log.checkpoint();
      await io('write -P 3 1M 4k'); // after the checkpoint: not in its prefix
      const second = await log.checkpoint();
      await log.detach();
      assert.deepEqual(await qmp.execute('query-block-jobs'), [], 'the mirror is gone');

      const reader = await WriteLogReader.open(log.logPath);
      try {
        const image = join(dir, 'replayed.raw');
        await truncate(join(dir, 'replayed.raw'), 0).catch(() => undefined);
        await (await open(image, 'w')).close();
        await truncate(image, SIZE);
        const upToFirst = await replay(reader, first.entries, image);
        // Flush entries are ours (the checkpoint's) and, at times, the mirror job's.
        assert.deepEqual(
          upToFirst.filter((k) => k !== 'flush'),
          [`write 0+${64 * KiB}`, `write ${32 * KiB}+${8 * KiB}`, `write ${16 * KiB}+${4 * KiB}`],
        );
        assert.ok(
          upToFirst.at(-1) === 'flush',
          `the checkpoint's own flush entry ends its prefix: ${upToFirst.join(', ')}`,
        );
        const got = await readFile(image);
        const expected = Buffer.alloc(SIZE);
        expected.fill(1, 0, 64 * KiB);
        expected.fill(2, 32 * KiB, 40 * KiB);
        expected.fill(0, 16 * KiB, 20 * KiB);
        assert.ok(got.equals(expected), 'the first prefix is the disk as of the first checkpoint');
        const rest = await replay(reader, second.entries, image);
        assert.deepEqual(
          rest.filter((k) => k !== 'flush'),
          [`write ${MiB}+${4 * KiB}`],
        );
        assert.ok(second.at >= first.at);
        // And the replayed image is the disk: qemu-img reads the real one under QEMU's lock (-U).
        const actual = join(dir, 'actual.raw');
        await runProcess('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', disk, actual]);
        assert.ok((await readFile(actual)).equals(await readFile(image)), 'replayed log = the disk');
      } finally {
        await reader.close();
      }
    } finally {
      await killPausedQemu(vm);
    }
  });

  it("a writing guest's log: every checkpoint replays to a gap-free write log with all it had acknowledged", async () => {
    const SIZE = 32 * MiB;
    const disk = join(dir, 'g.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(SIZE)]);
    const paths = {
      qmpSocket: join(dir, 'g.qmp'),
      pidFile: join(dir, 'g.pid'),
      serialLog: join(dir, 'g.serial'),
      uefiVars: join(dir, 'g.vars'),
    };
    const guestDir = join(repoRoot, '.cache', 'guest');
    const argv = buildVmArgv({
      def: {
        id: randomUUID(),
        name: 'qwl-guest',
        vcpus: 1,
        memoryMiB: 256,
        firmware: 'bios',
        machineType: 'q35',
        nics: [],
        boot: { kind: 'test-guest', writelogRate: 200, acpi: true },
      },
      disks: [
        { id: 'qwldata0', kind: 'image', format: 'qcow2', path: disk, rdmMode: null, shared: false, overlays: [] },
      ],
      paths,
      accel: 'tcg',
      testGuest: { kernel: join(guestDir, 'vmlinux-pvh'), initrd: join(guestDir, 'initrd.img') },
      ovmfCode: null,
    });
    let qmp: QmpClient | null = null;
    let pid: number | null = null;
    try {
      // Daemonized and paused (-S), as the supervisor starts VMs: the log is in place before the guest runs.
      await runProcess('qemu-system-x86_64', argv, { timeoutMs: 60_000 });
      pid = Number((await readFile(paths.pidFile, 'utf8')).trim());
      qmp = await QmpClient.connect(paths.qmpSocket, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
      const log = await QemuWriteLog.attach({ qmp, device: 'disk0', sizeBytes: SIZE, logPath: join(dir, 'g.log') });
      await qmp.execute('cont');

      const acked = async (): Promise<number> =>
        Math.max(0, ...parseSerialAcks(await readFile(paths.serialLog, 'utf8').catch(() => '')));
      const points: { entries: number; ackedBefore: number }[] = [];
      const deadline = Date.now() + 300_000;
      for (;;) {
        const before = await acked();
        if (before > 0) points.push({ entries: (await log.checkpoint()).entries, ackedBefore: before });
        if (before >= 1500) break;
        assert.ok(Date.now() < deadline, `the guest acknowledged ${before} records in 300 s`);
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.ok(points.length >= 5, `${points.length} checkpoints`);

      // Twenty checkpoints over the window (all if fewer) and the last, replayed in order onto one image.
      const step = Math.max(1, Math.floor(points.length / 20));
      const picked = points.filter((_, i) => i % step === 0 || i === points.length - 1);
      const image = join(dir, 'g.raw');
      await (await open(image, 'w')).close();
      await truncate(image, SIZE);
      const reader = await WriteLogReader.open(log.logPath);
      let previous = 0;
      try {
        for (const p of picked) {
          await replay(reader, p.entries, image);
          const report = await verifyWriteLog(image);
          assert.equal(
            report.consistent,
            true,
            `checkpoint at ${p.entries}: ${JSON.stringify({ ...report, torn: undefined })}`,
          );
          assert.ok(
            report.gapFreePrefix >= p.ackedBefore,
            `checkpoint at entry ${p.entries} holds ${report.gapFreePrefix} records; the guest had acknowledged ${p.ackedBefore} before it`,
          );
          assert.ok(report.gapFreePrefix >= previous, 'later checkpoints hold no fewer records');
          previous = report.gapFreePrefix;
        }
      } finally {
        await reader.close();
      }
      await log.detach();
    } finally {
      await qmp?.close();
      if (pid !== null) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });
});

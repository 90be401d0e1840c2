import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { buildVmArgv } from '../../../src/qemu/vm-argv.js';
import { QmpClient } from '../../../src/qemu/qmp-client.js';
import { serveNbd, type NbdExportBackend } from '../../../src/nbd/nbd-server.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { ContinuousTap } from '../../../src/cdp/continuous-tap.js';
import { receiveJournal, shipJournal } from '../../../src/cdp/journal-shipping.js';
import { PointInTimeExport } from '../../../src/cdp/point-in-time-export.js';
import { parseSerialAcks, verifyWriteLog } from '../../../src/guest/writelog-verifier.js';
import { repoRoot } from '../../harness/repo-root.js';
import { closePair, socketPair, type SocketPair } from '../../harness/socket-pair.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const RATE = 200;

/*
 * Issue 22's any-point ground truth, on the whole path but the site link: a booted test guest
 * writing its log at 200 records a second, its data disk tapped from its first write (QEMU's
 * write log, cdp/continuous-tap.ts) into a journal, shipped record by record into the recovery
 * site's journal (cdp/journal-shipping.ts over a socket); a checkpoint every 500 ms, each taken
 * after reading how far the guest had acknowledged. Then the disk as of many checkpoints, read
 * back from the recovery side's journal (base: the empty disk it started as): each is a gap-free
 * write log holding at least every record the guest acknowledged before that checkpoint.
 */
describe("any point in time of a writing guest, from the recovery side's journal", () => {
  let dir: string;
  let server: Server;
  let sock: string;
  let qemuPid: number | null = null;
  let qmp: QmpClient | null = null;
  let journal: WriteJournal | null = null;
  let remote: WriteJournal | null = null;
  let tap: ContinuousTap | null = null;
  let link: SocketPair | null = null;
  const exports = new Map<string, NbdExportBackend>();
  const errors: string[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-cdp-guest-'));
    sock = join(dir, 'nbd.sock');
    server = createServer((s) => serveNbd(s, { exports, onError: (e) => errors.push(e.message) }));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  after(async () => {
    await qmp?.close();
    if (qemuPid !== null) {
      try {
        process.kill(qemuPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await tap?.stop();
    if (link !== null) closePair(link);
    await journal?.close();
    await remote?.close();
    for (const e of exports.values()) if (e instanceof PointInTimeExport) await e.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('every checkpoint is a gap-free log with everything acknowledged before it', async () => {
    journal = await WriteJournal.open(join(dir, 'journal'));
    remote = await WriteJournal.open(join(dir, 'recovery-journal'));
    link = await socketPair(dir, 'link');
    const shipping = shipJournal(journal, link.a);
    const receiving = receiveJournal(remote, link.b);
    const disk = join(dir, 'data.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(SIZE)]);
    const paths = {
      qmpSocket: join(dir, 'qmp.sock'),
      pidFile: join(dir, 'qemu.pid'),
      serialLog: join(dir, 'serial.log'),
      uefiVars: join(dir, 'vars.fd'),
    };
    const guestDir = join(repoRoot, '.cache', 'guest');
    const argv = buildVmArgv({
      def: {
        id: randomUUID(),
        name: 'cdp-guest',
        vcpus: 1,
        memoryMiB: 256,
        firmware: 'bios',
        machineType: 'q35',
        nics: [],
        boot: { kind: 'test-guest', writelogRate: RATE, acpi: true },
      },
      disks: [
        { id: 'cdpdata0', kind: 'image', format: 'qcow2', path: disk, rdmMode: null, shared: false, overlays: [] },
      ],
      paths,
      accel: 'tcg',
      testGuest: { kernel: join(guestDir, 'vmlinux-pvh'), initrd: join(guestDir, 'initrd.img') },
      ovmfCode: null,
    });
    // Daemonized and paused (-S), as the supervisor starts VMs: the mirror is in place before the guest runs.
    await runProcess('qemu-system-x86_64', argv, { timeoutMs: 60_000 });
    qemuPid = Number((await readFile(paths.pidFile, 'utf8')).trim());
    qmp = await QmpClient.connect(paths.qmpSocket, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
    tap = await ContinuousTap.start({
      qmp,
      device: 'disk0',
      sizeBytes: SIZE,
      journal,
      logPath: join(dir, 'disk0.log'),
      checkpointMs: 3_600_000, // the test takes them
      // Pumps ahead of the checkpoints many times between two (the product's wait for 1 MiB).
      pumpAheadMs: 50,
      pumpAheadBytes: 16 * 1024,
    });
    await qmp.execute('cont');

    // Checkpoints every 500 ms once the guest writes, until it has acknowledged 1,500 records.
    const acked = async (): Promise<number> =>
      Math.max(0, ...parseSerialAcks(await readFile(paths.serialLog, 'utf8').catch(() => '')));
    const points: { seq: number; ackedBefore: number }[] = [];
    const deadline = Date.now() + 300_000;
    for (;;) {
      const before = await acked();
      if (before > 0) points.push({ seq: await tap.checkpoint(), ackedBefore: before });
      if (before >= 1500) break;
      assert.ok(Date.now() < deadline, `the guest acknowledged ${before} records in 300 s`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(points.length >= 5, `${points.length} checkpoints`);
    assert.equal(tap.broken, null);
    // The recovery side holds every checkpoint once the source's journal has them on disk.
    const lastSeq = points.at(-1)!.seq;
    while (remote.durableSeq < lastSeq) {
      assert.ok(Date.now() < deadline + 60_000, `the recovery journal holds ${remote.durableSeq} of ${lastSeq}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    // Writes pumped ahead carry the time of the checkpoint before them; some did, between most checkpoints.
    let ahead = 0;
    for (let seq = journal.index.firstSeq, cpTime = 0; seq < journal.index.nextSeq; seq++) {
      const e = journal.index.get(seq);
      if (e.kind === 'checkpoint') cpTime = e.timeUs;
      else if (e.timeUs === cpTime) ahead++;
    }
    assert.ok(ahead > 0, 'no write was pumped ahead of its checkpoint');

    // Twenty checkpoints spread over the window (all of them if fewer), and the last.
    const step = Math.max(1, Math.floor(points.length / 20));
    const picked = points.filter((_, i) => i % step === 0 || i === points.length - 1);
    const zeroBase = { size: SIZE, read: (_o: number, n: number) => Promise.resolve(Buffer.alloc(n)) };
    let previous = 0;
    for (const p of picked) {
      const name = `at-${p.seq}`;
      exports.set(name, new PointInTimeExport(remote.index, p.seq, zeroBase));
      const raw = join(dir, `${name}.raw`);
      await runProcess('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///${name}?socket=${sock}`, raw]);
      const report = await verifyWriteLog(raw);
      await rm(raw);
      assert.equal(report.consistent, true, `checkpoint ${p.seq}: ${JSON.stringify({ ...report, torn: undefined })}`);
      assert.ok(
        report.gapFreePrefix >= p.ackedBefore,
        `checkpoint ${p.seq} holds ${report.gapFreePrefix} records; the guest had acknowledged ${p.ackedBefore} before it`,
      );
      assert.ok(report.gapFreePrefix >= previous, 'later checkpoints hold no fewer records');
      previous = report.gapFreePrefix;
    }
    assert.deepEqual(errors, []);
    await tap.stop();
    tap = null;
    link.a.end();
    link.a.destroy();
    await Promise.all([shipping, receiving]);
    closePair(link);
    link = null;
  });
});

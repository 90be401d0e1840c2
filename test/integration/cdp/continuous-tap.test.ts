import { strict as assert } from 'node:assert';
import { access, chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { ContinuousTap, checkpointTogether } from '../../../src/cdp/continuous-tap.js';
import { PointInTimeExport } from '../../../src/cdp/point-in-time-export.js';
import { killPausedQemu, startPausedQemu, type PausedQemu } from '../../harness/paused-qemu.js';

const KiB = 1024;
const SIZE = 8 * 1024 * KiB;

/*
 * The protected side's tap on a real QEMU: writes journalled in order with checkpoints on a
 * clock; and when the journal fails, the guest writes on, the tap says why it broke and
 * takes its mirror away, and the last checkpoint before the break is still a true instant.
 */
describe('ContinuousTap', () => {
  let dir: string;
  let vm: PausedQemu | null = null;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-tap-'));
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'd.qcow2'), String(SIZE)]);
    vm = await startPausedQemu(
      dir,
      [
        { driver: 'file', filename: join(dir, 'd.qcow2'), 'node-name': 'disk0-file' },
        { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
      ],
      ['virtio-blk-pci,drive=disk0,id=disk0-dev'],
    );
  });
  after(async () => {
    await killPausedQemu(vm);
    await rm(dir, { recursive: true, force: true });
  });

  const write = async (pattern: number, offset: number, length: number): Promise<void> => {
    const out = await vm!.qmp.execute('human-monitor-command', {
      'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "write -P ${pattern} ${offset} ${length}"`,
    });
    assert.equal(out, '', String(out));
  };
  const jobs = async (): Promise<unknown[]> => (await vm!.qmp.execute('query-block-jobs')) as unknown[];

  it('journals writes in order with checkpoints on its clock, and leaves nothing behind when stopped', async () => {
    const journal = await WriteJournal.open(join(dir, 'j1'));
    const logPath = join(dir, 'cdp-disk0.log');
    const tap = await ContinuousTap.start({
      qmp: vm!.qmp,
      device: 'disk0',
      sizeBytes: SIZE,
      journal,
      logPath,
      checkpointMs: 50,
    });
    for (let i = 0; i < 10; i++) await write(i + 1, i * 64 * KiB, 64 * KiB);
    while (journal.index.checkpoints().length < 3) await new Promise((r) => setTimeout(r, 20));
    const last = await tap.checkpoint();
    await tap.stop();
    assert.equal(tap.broken, null);
    const writes = [];
    for (let seq = journal.index.firstSeq; seq < journal.index.nextSeq; seq++) {
      const e = journal.index.get(seq);
      if (e.kind === 'write') writes.push([e.offset, e.length]);
    }
    assert.deepEqual(
      writes,
      Array.from({ length: 10 }, (_, i) => [i * 64 * KiB, 64 * KiB]),
    );
    const view = new PointInTimeExport(journal.index, last, {
      size: SIZE,
      read: (_o, n) => Promise.resolve(Buffer.alloc(n)),
    });
    const got = await view.read(0, 640 * KiB);
    for (let i = 0; i < 10; i++) assert.equal(got[i * 64 * KiB], i + 1);
    await view.close();
    assert.deepEqual(await jobs(), [], 'the mirror is gone');
    await assert.rejects(access(logPath), "QEMU's log is gone");
    await journal.close();
  });

  it("gives the log's disk space back once what it holds is in the journal, and logs on", async () => {
    const journal = await WriteJournal.open(join(dir, 'j3'));
    const logPath = join(dir, 'cdp-disk0-3.log');
    const tap = await ContinuousTap.start({
      qmp: vm!.qmp,
      device: 'disk0',
      sizeBytes: SIZE,
      journal,
      logPath,
      checkpointMs: 60_000,
      releaseEveryBytes: 64 * KiB,
    });
    for (let i = 0; i < 8; i++) await write(0x40 + i, i * 64 * KiB, 64 * KiB);
    await tap.checkpoint();
    const after1 = await stat(logPath);
    assert.ok(after1.size > 8 * 64 * KiB, `the log is ${after1.size} bytes long`);
    assert.ok(after1.blocks * 512 < 64 * KiB, `only ${after1.blocks * 512} bytes of it stay on disk`);
    for (let i = 0; i < 8; i++) await write(0x50 + i, (8 + i) * 64 * KiB, 64 * KiB);
    const last = await tap.checkpoint();
    assert.ok((await stat(logPath)).blocks * 512 < 64 * KiB);
    await tap.stop();
    const view = new PointInTimeExport(journal.index, last, {
      size: SIZE,
      read: (_o, n) => Promise.resolve(Buffer.alloc(n)),
    });
    const got = await view.read(0, 16 * 64 * KiB);
    await view.close();
    for (let i = 0; i < 16; i++) assert.equal(got[i * 64 * KiB + 100], i < 8 ? 0x40 + i : 0x50 + i - 8, `chunk ${i}`);
    await journal.close();
  });

  it("runs on, saying so once, when the log's space cannot be given back", async () => {
    // A file system without hole punching, as fallocate reports it there.
    const bin = join(dir, 'no-punch-bin');
    await mkdir(bin);
    await writeFile(
      join(bin, 'fallocate'),
      '#!/bin/sh\necho "fallocate: fallocate failed: Operation not supported" >&2\nexit 1\n',
    );
    await chmod(join(bin, 'fallocate'), 0o755);
    const path = process.env['PATH'];
    process.env['PATH'] = `${bin}:${path ?? ''}`;
    const journal = await WriteJournal.open(join(dir, 'j4'));
    const warnings: string[] = [];
    try {
      const tap = await ContinuousTap.start({
        qmp: vm!.qmp,
        device: 'disk0',
        sizeBytes: SIZE,
        journal,
        logPath: join(dir, 'cdp-disk0-4.log'),
        checkpointMs: 60_000,
        releaseEveryBytes: 64 * KiB,
        onLogGrows: (r) => warnings.push(r),
      });
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < 4; i++) await write(0x30 + i, i * 64 * KiB, 64 * KiB);
        await tap.checkpoint();
      }
      assert.equal(tap.broken, null, 'the tap runs on');
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /Operation not supported/);
      await tap.stop();
      assert.equal(journal.index.checkpoints().length, 2);
    } finally {
      process.env['PATH'] = path;
      await journal.close();
    }
  });

  it('breaks, never hurting the guest, when the journal fails', async () => {
    const journal = await WriteJournal.open(join(dir, 'j2'));
    const reasons: string[] = [];
    const tap = await ContinuousTap.start({
      qmp: vm!.qmp,
      device: 'disk0',
      sizeBytes: SIZE,
      journal,
      logPath: join(dir, 'cdp-disk0.log'),
      checkpointMs: 60_000,
      onBroken: (r) => reasons.push(r),
    });
    await write(0x21, 0, 4 * KiB);
    const before = await tap.checkpoint();
    await journal.close(); // the journal is gone: the next checkpoint's appends fail
    await write(0x22, 4 * KiB, 4 * KiB);
    await assert.rejects(tap.checkpoint(), /closed/);
    await write(0x23, 8 * KiB, 4 * KiB);
    assert.equal(reasons.length, 1);
    assert.match(tap.broken!, /a checkpoint failed/);
    await assert.rejects(tap.checkpoint(), /broke/, 'a broken tap takes no more checkpoints');
    while ((await jobs()).length > 0) await new Promise((r) => setTimeout(r, 20));
    // The guest's writes all landed on its own disk.
    const check = await vm!.qmp.execute('human-monitor-command', {
      'command-line': 'qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "read -P 0x23 8192 4096"',
    });
    assert.equal(check, '');
    // The checkpoint before the break holds exactly what was written before it.
    const reopened = await WriteJournal.open(join(dir, 'j2'));
    assert.equal(reopened.index.nextSeq - 1, before, 'nothing after the break was journalled');
    await tap.stop();
    await reopened.close();
  });
});

/*
 * A consistency group's checkpoint over three VMs: one instant in every journal; one VM's
 * failure fails that checkpoint for the group but leaves the others' taps running.
 */
describe('checkpointTogether', () => {
  let dir: string;
  const vms: PausedQemu[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-tap-group-'));
    for (let i = 0; i < 3; i++) {
      const sub = join(dir, `vm${i}`);
      await mkdir(sub);
      await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', join(sub, 'd.qcow2'), String(SIZE)]);
      vms.push(
        await startPausedQemu(
          sub,
          [
            { driver: 'file', filename: join(sub, 'd.qcow2'), 'node-name': 'disk0-file' },
            { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
          ],
          ['virtio-blk-pci,drive=disk0,id=disk0-dev'],
        ),
      );
    }
  });
  after(async () => {
    for (const vm of vms) await killPausedQemu(vm);
    await rm(dir, { recursive: true, force: true });
  });

  it('stamps one instant in every journal, and a failed member fails only that checkpoint', async () => {
    const journals = await Promise.all(vms.map((_, i) => WriteJournal.open(join(dir, `vm${i}`, 'journal'))));
    const taps = await Promise.all(
      vms.map((vm, i) =>
        ContinuousTap.start({
          qmp: vm.qmp,
          device: 'disk0',
          sizeBytes: SIZE,
          journal: journals[i]!,
          logPath: join(dir, `vm${i}`, 'disk0.log'),
          checkpointMs: 60_000,
        }),
      ),
    );
    const write = async (i: number, pattern: number): Promise<void> => {
      const out = await vms[i]!.qmp.execute('human-monitor-command', {
        'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "write -P ${pattern} 0 4k"`,
      });
      assert.equal(out, '', String(out));
    };
    for (let i = 0; i < 3; i++) await write(i, 0x60 + i);
    const seqs = await checkpointTogether(taps);
    const stamped = seqs.map((seq, i) => journals[i]!.index.get(seq));
    assert.deepEqual(
      stamped.map((e) => e.kind),
      ['checkpoint', 'checkpoint', 'checkpoint'],
    );
    assert.equal(new Set(stamped.map((e) => e.timeUs)).size, 1, 'one instant in all three journals');

    // One member's journal fails: the group's checkpoint fails; the other taps run on.
    await journals[2]!.close();
    await write(2, 0x70);
    await assert.rejects(checkpointTogether(taps), /closed|abandoned/);
    assert.equal(taps[0]!.broken, null);
    assert.equal(taps[1]!.broken, null);
    assert.match(taps[2]!.broken!, /a checkpoint failed/);
    for (let i = 0; i < 2; i++) await write(i, 0x80 + i);
    const again = await checkpointTogether(taps.slice(0, 2));
    assert.equal(journals[0]!.index.get(again[0]!).timeUs, journals[1]!.index.get(again[1]!).timeUs);
    for (const t of taps) await t.stop();
    for (const j of journals.slice(0, 2)) await j.close();
  });
});

import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { serveNbd, type NbdExportBackend } from '../../../src/nbd/nbd-server.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { startWriteBlockingMirror } from '../../../src/cdp/write-blocking-mirror.js';
import { JournalReceiver } from '../../../src/cdp/journal-receiver.js';
import { PointInTimeExport } from '../../../src/cdp/point-in-time-export.js';
import { killPausedQemu, startPausedQemu, type PausedQemu } from '../../harness/paused-qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;

/*
 * Continuous replication's local path on real QEMU: a running VM's disk mirrored with
 * write-blocking onto mamori's NBD server, whose journal receiver appends each guest write;
 * checkpoints between writes; then the disk as of each checkpoint, served back by the same
 * server from the journal over an empty base, read by qemu-img and compared with what the
 * guest had written by then (and the last one with the source image itself).
 */
describe('a write journal fed by a write-blocking mirror', () => {
  let dir: string;
  let server: Server;
  let sock: string;
  let vm: PausedQemu | null = null;
  let journal: WriteJournal | null = null;
  const exports = new Map<string, NbdExportBackend>();
  const errors: string[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-cdp-it-'));
    sock = join(dir, 'nbd.sock');
    server = createServer((s) => serveNbd(s, { exports, onError: (e) => errors.push(e.message) }));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  after(async () => {
    await killPausedQemu(vm);
    await journal?.close();
    for (const e of exports.values()) if (e instanceof PointInTimeExport) await e.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('journals every guest write in order and gives the disk back as of any checkpoint', async () => {
    journal = await WriteJournal.open(join(dir, 'journal'), { segmentBytes: 1 * MiB });
    exports.set('receiver', new JournalReceiver(journal, SIZE));
    const image = join(dir, 'vm.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(SIZE)]);
    vm = await startPausedQemu(
      dir,
      [
        { driver: 'file', filename: image, 'node-name': 'disk0-file' },
        { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
      ],
      ['virtio-blk-pci,drive=disk0,id=disk0-dev'],
    );
    const qmp = vm.qmp;
    await startWriteBlockingMirror(qmp, { device: 'disk0', jobId: 'cdp0', socketPath: sock, exportName: 'receiver' });

    const model = Buffer.alloc(SIZE);
    const points = new Map<number, Buffer>();
    let seed = 11;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 60; i++) {
      const length = (1 + rand(16)) * 4 * KiB;
      const offset = rand((SIZE - length) / (4 * KiB)) * 4 * KiB;
      const pattern = 1 + (i % 254);
      const cmd = i % 13 === 7 ? `write -z ${offset} ${length}` : `write -P ${pattern} ${offset} ${length}`;
      const out = await qmp.execute('human-monitor-command', {
        'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "${cmd}"`,
      });
      assert.equal(out, '', String(out));
      model.fill(i % 13 === 7 ? 0 : pattern, offset, offset + length);
      // The write completed for the guest: it is in the journal already.
      if (i % 10 === 9) points.set((await journal.appendCheckpoint()).seq, Buffer.from(model));
    }
    assert.equal(journal.index.count, 66, '60 writes (zeroes included) and 6 checkpoints, nothing else');

    // Each checkpoint, served from the journal and read back by qemu-img.
    const zeroBase = { size: SIZE, read: (_o: number, n: number) => Promise.resolve(Buffer.alloc(n)) };
    for (const [seq, expected] of points) {
      exports.set(`at-${seq}`, new PointInTimeExport(journal.index, seq, zeroBase));
      const raw = join(dir, `at-${seq}.raw`);
      await runProcess('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///at-${seq}?socket=${sock}`, raw]);
      assert.equal(Buffer.compare(await readFile(raw), expected), 0, `the disk as of checkpoint ${seq}`);
    }
    // The last checkpoint is the source disk itself.
    await qmp.execute('human-monitor-command', {
      'command-line': 'qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "flush"',
    });
    const source = join(dir, 'source.raw');
    await runProcess('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', image, source]);
    const lastSeq = [...points.keys()].at(-1)!;
    assert.equal(Buffer.compare(await readFile(source), points.get(lastSeq)!), 0);
    assert.deepEqual(errors, []);
  });
});

import { strict as assert } from 'node:assert';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { createQcow2 } from '../../../src/qemu/qemu-img-write.js';
import type { QmpBlockInfo } from '../../../src/qemu/qmp-types.js';
import { serveNbd, type NbdExportBackend } from '../../../src/nbd/nbd-server.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { PointInTimeExport, type BaseReader } from '../../../src/cdp/point-in-time-export.js';
import { moveOffExport, readsThroughBacking } from '../../../src/cdp/instant-recovery.js';
import { exportBackingName } from '../../../src/cdp/point-in-time-exports.js';
import { killPausedQemu, startPausedQemu, type PausedQemu } from '../../harness/paused-qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 16 * MiB;

/*
 * Instant recovery on a real QEMU: a VM's disk is a local overlay on the journal's export of
 * one checkpoint (a base file with journal records over it); the guest reads that instant at
 * once and writes into the overlay; block-stream then moves it off the export, which closes.
 * The overlay alone is then byte for byte the checkpoint plus the guest's own write.
 */
describe('instant recovery from a point-in-time export', () => {
  let dir: string;
  let server: Server;
  let sock: string;
  let vm: PausedQemu | null = null;
  let journal: WriteJournal | null = null;
  let view: PointInTimeExport | null = null;
  const exports = new Map<string, NbdExportBackend>();
  const errors: string[] = [];
  let clients = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-instant-'));
    sock = join(dir, 'nbd.sock');
    server = createServer((s) => {
      clients++;
      s.once('close', () => clients--);
      serveNbd(s, { exports, onError: (e) => errors.push(e.message) });
    });
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  after(async () => {
    await killPausedQemu(vm);
    await view?.close();
    await journal?.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('boots from the export with nothing copied, then moves onto its own overlay', async () => {
    // The base: what the replica held before the journal (0x11 over the first 4 MiB).
    const basePath = join(dir, 'base.raw');
    const baseBytes = Buffer.alloc(SIZE);
    baseBytes.fill(0x11, 0, 4 * MiB);
    await writeFile(basePath, baseBytes);
    const fh = await open(basePath, 'r');
    const base: BaseReader = {
      size: SIZE,
      read: async (offset, length) => {
        const b = Buffer.alloc(length);
        await fh.read(b, 0, length, offset);
        return b;
      },
    };
    journal = await WriteJournal.open(join(dir, 'journal'));
    await journal.appendWrite(MiB, Buffer.alloc(256 * KiB, 0x22));
    const { seq } = await journal.appendCheckpoint();
    await journal.appendWrite(MiB, Buffer.alloc(256 * KiB, 0x33)); // after the point: not in it
    const expected = Buffer.from(baseBytes);
    expected.fill(0x22, MiB, MiB + 256 * KiB);
    view = new PointInTimeExport(journal.index, seq, base);
    exports.set('point', view);

    // The overlay's header names the export as its backing, as a recovery writes it
    // (point-in-time-exports.ts): the VM's command line opens the overlay as any disk.
    const overlay = join(dir, 'recovered.qcow2');
    const backing = exportBackingName(sock, 'point', 30);
    await createQcow2(overlay, { layout: 'replica', backing: { file: backing, format: 'raw' } });
    vm = await startPausedQemu(
      dir,
      [
        { driver: 'file', filename: overlay, 'node-name': 'disk0-file' },
        { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
      ],
      ['virtio-blk-pci,drive=disk0,id=disk0-dev'],
    );
    const io = async (cmd: string): Promise<string> =>
      String(
        await vm!.qmp.execute('human-monitor-command', {
          'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "${cmd}"`,
        }),
      );
    // The guest sees the point at once: the journal's record over the base, not the later one.
    assert.equal(await io(`read -P 0x22 ${MiB} ${256 * KiB}`), '');
    assert.equal(await io(`read -P 0x11 0 ${MiB}`), '');
    assert.equal(await io(`read -P 0 ${8 * MiB} ${MiB}`), '');
    // Its own write goes to the overlay.
    assert.equal(await io(`write -P 0x44 ${2 * MiB} ${64 * KiB}`), '');
    expected.fill(0x44, 2 * MiB, 2 * MiB + 64 * KiB);
    assert.ok(clients >= 1, 'the VM reads through the export');

    const blocks = async (): Promise<QmpBlockInfo[]> => (await vm!.qmp.execute('query-block')) as QmpBlockInfo[];
    assert.ok(readsThroughBacking(await blocks(), overlay), 'the overlay reads through the export');
    await moveOffExport(vm.qmp, 'disk0');
    assert.ok(!readsThroughBacking(await blocks(), overlay), 'the overlay stands alone');
    for (let i = 0; clients > 0; i++) {
      assert.ok(i < 200, 'the export connection closed');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await io(`read -P 0x22 ${MiB} ${256 * KiB}`), '', 'the VM still reads the point, from its overlay');
    assert.equal(await io('flush'), '');
    await killPausedQemu(vm);
    vm = null;

    const info = JSON.parse((await runProcess('qemu-img', ['info', '--output=json', overlay])).stdout) as {
      'backing-filename'?: string;
    };
    assert.equal(info['backing-filename'], undefined, 'the overlay stands alone');
    const raw = join(dir, 'recovered.raw');
    await runProcess('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', overlay, raw]);
    assert.equal(Buffer.compare(await readFile(raw), expected), 0);
    await fh.close();
    assert.deepEqual(errors, []);
  });
});

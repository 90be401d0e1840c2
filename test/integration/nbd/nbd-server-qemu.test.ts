import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { killPausedQemu, startPausedQemu, type PausedQemu } from '../../harness/paused-qemu.js';
import { startWriteBlockingMirror, stopWriteBlockingMirror } from '../../../src/cdp/write-blocking-mirror.js';
import { serveNbd, type NbdExportBackend, type NbdWriteFlags } from '../../../src/nbd/nbd-server.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** An export in memory that logs each write as it reaches the backend: offset, length, first byte. */
class RecordingBackend implements NbdExportBackend {
  readonly data: Buffer;
  readonly writes: [number, number, number][] = [];
  flushes = 0;
  constructor(size: number) {
    this.data = Buffer.alloc(size);
  }
  get size(): number {
    return this.data.length;
  }
  read(offset: number, length: number): Promise<Buffer> {
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }
  write(offset: number, data: Buffer, _flags: NbdWriteFlags): Promise<void> {
    this.writes.push([offset, data.length, data[0]!]);
    data.copy(this.data, offset);
    return Promise.resolve();
  }
  flush(): Promise<void> {
    this.flushes++;
    return Promise.resolve();
  }
}

/*
 * mamori's NBD server with QEMU as its client: qemu-io and qemu-img over a unix socket, and
 * the mechanism continuous replication is to use: a write-blocking mirror (sync none) of a
 * running VM's disk onto it, which forwards each guest write, in order, before the guest sees
 * it complete.
 */
describe("mamori's NBD server and QEMU's NBD client", () => {
  let dir: string;
  let server: Server;
  let sock: string;
  const exports = new Map<string, NbdExportBackend>();
  const errors: string[] = [];
  let vm: PausedQemu | null = null;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-nbd-server-it-'));
    sock = join(dir, 'nbd.sock');
    server = createServer((s) => serveNbd(s, { exports, onError: (e) => errors.push(e.message) }));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  after(async () => {
    await killPausedQemu(vm);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  const uri = (name: string): string => `nbd+unix:///${name}?socket=${sock}`;

  it('qemu-io writes and reads back; qemu-img copies an image into it', async () => {
    const disk = new RecordingBackend(4 * MiB);
    exports.set('disk', disk);
    const io = await runProcess('qemu-io', [
      '-f',
      'raw',
      uri('disk'),
      '-c',
      `write -P 0x5a ${64 * KiB} ${64 * KiB}`,
      '-c',
      `read -P 0x5a ${64 * KiB} ${64 * KiB}`,
      '-c',
      `read -P 0 0 ${64 * KiB}`,
      '-c',
      'flush',
    ]);
    assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed|error/i, io.stdout + io.stderr);
    assert.deepEqual(disk.writes, [[64 * KiB, 64 * KiB, 0x5a]]);
    assert.ok(disk.flushes >= 1);

    // An image of 3 patterns copied in by qemu-img: the backend holds what qemu-img reads from it.
    const src = join(dir, 'src.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', src, String(4 * MiB)]);
    for (const [p, at] of [
      [0x11, 0],
      [0x22, MiB],
      [0x33, 3 * MiB + 512 * KiB],
    ] as const)
      await runProcess('qemu-io', ['-f', 'qcow2', src, '-c', `write -P ${p} ${at} ${256 * KiB}`]);
    const copy = new RecordingBackend(4 * MiB);
    exports.set('copy', copy);
    await runProcess('qemu-img', ['convert', '-n', '-f', 'qcow2', '-O', 'raw', src, uri('copy')]);
    const expected = join(dir, 'src.raw');
    await runProcess('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', src, expected]);
    assert.equal(Buffer.compare(copy.data, await readFile(expected)), 0);
    assert.deepEqual(errors, []);
  });

  it("a write-blocking mirror of a running VM's disk forwards each guest write, in order", async () => {
    const journal = new RecordingBackend(8 * MiB);
    exports.set('journal', journal);
    const image = join(dir, 'vm.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(8 * MiB)]);
    vm = await startPausedQemu(
      dir,
      [
        { driver: 'file', filename: image, 'node-name': 'disk0-file' },
        { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
      ],
      ['virtio-blk-pci,drive=disk0,id=disk0-dev'],
    );
    const { qmp } = vm;
    const mirror = await startWriteBlockingMirror(qmp, {
      device: 'disk0',
      jobId: 'cdp',
      socketPath: sock,
      exportName: 'journal',
    });
    // Guest-like writes through the device: each is on the export before qemu-io returns.
    const plan: [number, number, number][] = [
      [0, 4 * KiB, 0x41],
      [MiB, 64 * KiB, 0x42],
      [4 * KiB, 4 * KiB, 0x43],
      [0, 4 * KiB, 0x44], // an overwrite: the journal keeps both, in order
    ];
    for (const [at, length, p] of plan) {
      const seen = journal.writes.length;
      const out = await qmp.execute('human-monitor-command', {
        'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "write -P ${p} ${at} ${length}"`,
      });
      assert.equal(out, '');
      assert.equal(journal.writes.length, seen + 1, `write ${p.toString(16)} was forwarded before it completed`);
    }
    assert.deepEqual(journal.writes, plan);
    await stopWriteBlockingMirror(qmp, mirror);
    assert.deepEqual(await qmp.execute('query-block-jobs'), [], 'the mirror job is gone');
    assert.deepEqual(errors, []);
  });
});

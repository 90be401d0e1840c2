import { strict as assert } from 'node:assert';
import { access, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createQcow2 } from '../../../src/qemu/qemu-img-write.js';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { killPausedQemu, startPausedQemu, type PausedQemu } from '../../harness/paused-qemu.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import {
  ensureBitmap,
  inspectBitmaps,
  queryBlockNodes,
  readImageBitmaps,
} from '../../../src/replication/dirty-bitmaps.js';
import {
  abortFleecingPoint,
  completeFleecingPoint,
  createFleecingPoint,
  type FleecingPoint,
} from '../../../src/replication/fleecing-point.js';
import {
  abortOfflineFleecingPoint,
  completeOfflineFleecingPoint,
  createOfflineFleecingPoint,
} from '../../../src/replication/offline-fleecing-point.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const G = 64 * KiB; // bitmap granularity

type Vm = PausedQemu;

/**
 * A VM laid out as vm-argv does: disk0 qcow2 (disk0-file + disk0), disk1 raw (disk1-file +
 * disk1), disk2 a virtual RDM (protocol node disk2 only). Paused, TCG, no guest.
 */
function startVm(dir: string): Promise<Vm> {
  return startPausedQemu(
    dir,
    [
      { driver: 'file', filename: join(dir, 'd0.qcow2'), 'node-name': 'disk0-file' },
      { driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' },
      { driver: 'file', filename: join(dir, 'd1.raw'), 'node-name': 'disk1-file' },
      { driver: 'raw', file: 'disk1-file', 'node-name': 'disk1' },
      { driver: 'file', filename: join(dir, 'd2.rdm'), 'node-name': 'disk2' },
    ],
    [0, 1, 2].map((i) => `virtio-blk-pci,drive=disk${i},id=disk${i}-dev`),
  );
}

const killVm = killPausedQemu;

async function quitVm(vm: Vm): Promise<void> {
  await vm.qmp.execute('quit').catch(() => undefined);
  await vm.exited;
  await vm.qmp.close();
}

/** A guest-like write: through the device's BlockBackend, so it marks bitmaps dirty. */
async function guestWrite(vm: Vm, disk: number, pattern: number, offset: number, length: number): Promise<void> {
  const out = await vm.qmp.execute('human-monitor-command', {
    'command-line': `qemu-io -d /machine/peripheral/disk${disk}-dev/virtio-backend "write -P ${pattern} ${offset} ${length}"`,
  });
  assert.equal(out, '', `qemu-io said: ${out}`);
}

function nbdOpts(sock: string, exp: string, extra = ''): string {
  return `driver=nbd,server.type=unix,server.path=${sock},export=${exp}${extra}`;
}

type Range = [number, number];

/** Extents of an NBD export as qemu-img map shows them; with a bitmap context, dirty shows as data:false. */
async function extents(
  sock: string,
  exp: string,
  metaContext: string | null,
): Promise<{ data: Range[]; hole: Range[] }> {
  const opts = nbdOpts(sock, exp, metaContext === null ? '' : `,x-dirty-bitmap=${metaContext}`);
  const { stdout } = await runProcess('qemu-img', ['map', '--output=json', '--image-opts', opts], {
    timeoutMs: 30_000,
  });
  const list = JSON.parse(stdout) as { start: number; length: number; data: boolean }[];
  const pick = (data: boolean): Range[] =>
    list.filter((e) => e.data === data).map((e) => [e.start, e.start + e.length]);
  return { data: pick(true), hole: pick(false) };
}

const dirty = async (
  p: { nbdSocket: string },
  d: { exportName: string; metaContext: string | null },
): Promise<Range[]> => (await extents(p.nbdSocket, d.exportName, d.metaContext)).hole;

async function readsAs(sock: string, exp: string, pattern: number, offset: number, length: number): Promise<boolean> {
  const r = await runProcess(
    'qemu-io',
    ['-r', '--image-opts', nbdOpts(sock, exp), '-c', `read -P ${pattern} ${offset} ${length}`],
    { okCodes: [0, 1] },
  );
  return r.code === 0;
}

async function bitmapNames(vm: Vm, node: string): Promise<string[]> {
  return ((await queryBlockNodes(vm.qmp)).get(node)?.bitmaps.map((b) => b.name) ?? []).sort();
}

/** Nothing of a torn-down point is left in QEMU or on disk. */
async function assertNoMachinery(vm: Vm, p: FleecingPoint): Promise<void> {
  assert.deepEqual(await vm.qmp.execute('query-block-exports'), []);
  assert.deepEqual(await vm.qmp.execute('query-block-jobs'), []);
  const nodes = await queryBlockNodes(vm.qmp);
  for (const d of p.disks) {
    assert.equal(nodes.has(d.fleeceNode), false, `${d.fleeceNode} removed`);
    await assert.rejects(access(d.fleeceFile), `${d.fleeceFile} deleted`);
  }
}

describe('fleecing points and dirty bitmaps on a real QEMU (TCG, -S)', () => {
  let dir: string;
  let vm: Vm | null = null;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-fleece-it-'));
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'd0.qcow2'), String(4 * MiB)]);
    await runProcess('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'd1.raw'), String(4 * MiB)]);
    await runProcess('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'd2.rdm'), String(4 * MiB)]);
  });
  after(async () => {
    await killVm(vm);
    await rm(dir, { recursive: true, force: true });
  });

  const nodes = ['disk0', 'disk1', 'disk2'];
  const opts = () => ({ qmp: vm!.qmp, nodes, workDir: dir, nbdSocket: join(dir, 'vm.nbd') });

  it('full first point, incremental next, abort keeps the changes, complete moves on', async () => {
    vm = await startVm(dir);
    await guestWrite(vm, 0, 0x11, 0, 128 * KiB);

    // --- cycle 1: never replicated -> full, application-consistent through the hooks
    const calls: string[] = [];
    const p1 = await createFleecingPoint({
      ...opts(),
      previousGeneration: null,
      guest: { freeze: async () => void calls.push('freeze'), thaw: async () => void calls.push('thaw') },
    });
    assert.deepEqual(calls, ['freeze', 'thaw']);
    assert.equal(p1.consistency, 'application');
    assert.equal(p1.generation, 1);
    assert.equal(p1.full, true);
    assert.deepEqual(
      p1.disks.map((d) => [d.node, d.mode, d.persistent, d.metaContext]),
      [
        ['disk0', 'full', true, null],
        ['disk1', 'full', false, null],
        ['disk2', 'full', false, null],
      ],
    );
    await guestWrite(vm, 0, 0x22, 0, 4 * KiB); // after the fleecing instant
    assert.equal(await readsAs(p1.nbdSocket, p1.disks[0]!.exportName, 0x11, 0, 128 * KiB), true, 'point-in-time data');
    assert.deepEqual(
      (await extents(p1.nbdSocket, p1.disks[0]!.exportName, null)).data,
      [[0, 128 * KiB]],
      'allocated extents for the full copy',
    );
    await completeFleecingPoint(vm.qmp, p1);
    await assertNoMachinery(vm, p1);
    assert.deepEqual(await bitmapNames(vm, 'disk0'), ['mamori-1']);

    // --- cycle 2: incremental; exactly the written granules are dirty
    await guestWrite(vm, 0, 0x33, 1 * MiB, 4 * KiB);
    await guestWrite(vm, 0, 0x44, 3 * MiB + 60 * KiB, 8 * KiB); // straddles two granules
    await guestWrite(vm, 1, 0x55, 2 * MiB, 4 * KiB);
    const p2 = await createFleecingPoint({ ...opts(), previousGeneration: 1 });
    assert.equal(p2.consistency, 'crash');
    assert.deepEqual(
      p2.disks.map((d) => d.mode),
      ['incremental', 'incremental', 'incremental'],
    );
    const [d0, d1, d2] = p2.disks;
    assert.equal(d0!.metaContext, 'qemu:dirty-bitmap:mamori-2-fleece');
    assert.deepEqual(await dirty(p2, d0!), [
      [0, G],
      [1 * MiB, 1 * MiB + G],
      [3 * MiB, 3 * MiB + 2 * G],
    ]);
    assert.deepEqual(await dirty(p2, d1!), [[2 * MiB, 2 * MiB + G]]);
    assert.deepEqual(await dirty(p2, d2!), []);
    await guestWrite(vm, 0, 0x66, 2 * MiB, 4 * KiB); // after the instant: neither in the data nor in the exported bitmap
    assert.equal(await readsAs(p2.nbdSocket, d0!.exportName, 0, 2 * MiB, 4 * KiB), true);
    assert.equal(await readsAs(p2.nbdSocket, d0!.exportName, 0x22, 0, 4 * KiB), true);
    assert.deepEqual(await dirty(p2, d0!), [
      [0, G],
      [1 * MiB, 1 * MiB + G],
      [3 * MiB, 3 * MiB + 2 * G],
    ]);
    await abortFleecingPoint(vm.qmp, p2);
    await assertNoMachinery(vm, p2);
    assert.deepEqual(await bitmapNames(vm, 'disk0'), ['mamori-1'], 'abort keeps the previous bitmap only');

    // --- cycle 3 (retry of 2): sees everything since point 1, including the write during the cut cycle
    const p3 = await createFleecingPoint({ ...opts(), previousGeneration: 1 });
    assert.equal(p3.generation, 2);
    assert.deepEqual(await dirty(p3, p3.disks[0]!), [
      [0, G],
      [1 * MiB, 1 * MiB + G],
      [2 * MiB, 2 * MiB + G],
      [3 * MiB, 3 * MiB + 2 * G],
    ]);
    assert.equal(await readsAs(p3.nbdSocket, p3.disks[0]!.exportName, 0x66, 2 * MiB, 4 * KiB), true);
    await completeFleecingPoint(vm.qmp, p3);
    await assertNoMachinery(vm, p3);
    for (const n of nodes) assert.deepEqual(await bitmapNames(vm, n), ['mamori-2']);

    // --- cycle 4 is cut by a server crash: the point description is lost, QEMU keeps its exports,
    // jobs, nodes, bitmaps and NBD server. The retry clears them and starts over from point 2.
    await guestWrite(vm, 2, 0x5a, 0, 4 * KiB);
    const lost = await createFleecingPoint({ ...opts(), previousGeneration: 2 });
    assert.deepEqual(await bitmapNames(vm, 'disk2'), ['mamori-2', 'mamori-3', 'mamori-3-fleece']);
    const p4 = await createFleecingPoint({ ...opts(), previousGeneration: 2 });
    assert.deepEqual(await bitmapNames(vm, 'disk2'), ['mamori-2', 'mamori-3', 'mamori-3-fleece']);
    assert.deepEqual(
      (await vm.qmp.execute('query-block-jobs')).map((j) => j.device).sort(),
      p4.disks.map((d) => d.jobId).sort(),
    );
    assert.deepEqual(await dirty(p4, p4.disks[2]!), [[0, G]]);
    await completeFleecingPoint(vm.qmp, p4);
    await assertNoMachinery(vm, lost);
    for (const n of nodes) assert.deepEqual(await bitmapNames(vm, n), ['mamori-3']);
  });

  it('guest freeze: a failure falls back to crash-consistent, or refuses when required; runtime bitmaps on raw nodes', async () => {
    assert.ok(vm !== null);
    const calls: string[] = [];
    const failing = {
      freeze: async () => {
        calls.push('freeze');
        throw new Error('agent not running');
      },
      thaw: async () => void calls.push('thaw'),
    };
    const p = await createFleecingPoint({ ...opts(), previousGeneration: 3, guest: failing });
    assert.deepEqual([p.consistency, p.freezeError, calls], ['crash', 'agent not running', ['freeze']]);
    await abortFleecingPoint(vm.qmp, p);
    await assert.rejects(
      createFleecingPoint({ ...opts(), previousGeneration: 3, guest: { ...failing, required: true } }),
      (e) => isMamoriError(e, 'VM_INVALID_STATE'),
    );
    await assertNoMachinery(vm, p);
    for (const n of nodes) assert.deepEqual(await bitmapNames(vm, n), ['mamori-3'], 'nothing changed');

    assert.deepEqual(await ensureBitmap(vm.qmp, 'disk1', 'probe'), { persistent: false, created: true });
    assert.deepEqual(await ensureBitmap(vm.qmp, 'disk1', 'probe'), { persistent: false, created: false });
    assert.deepEqual(await ensureBitmap(vm.qmp, 'disk0', 'probe'), { persistent: true, created: true });
    for (const node of ['disk0', 'disk1']) await vm.qmp.execute('block-dirty-bitmap-remove', { node, name: 'probe' });
  });

  it('after a restart: qcow2 bitmaps survive a clean quit, raw and RDM ones do not; kill -9 makes them inconsistent', async () => {
    assert.ok(vm !== null);
    await guestWrite(vm, 0, 0x77, 512 * KiB, 4 * KiB);
    await quitVm(vm);
    vm = await startVm(dir);
    const states = await inspectBitmaps(vm.qmp, nodes, 3);
    assert.deepEqual(
      states.map((s) => [s.node, s.mode, s.reason, s.persistentCapable]),
      [
        ['disk0', 'incremental', null, true],
        ['disk1', 'resync', 'missing', false],
        ['disk2', 'resync', 'missing', false],
      ],
    );

    await guestWrite(vm, 0, 0x78, 640 * KiB, 4 * KiB);
    // As a guest would: acknowledged-and-flushed data survives kill -9; unflushed qcow2 metadata may not.
    await vm.qmp.execute('human-monitor-command', {
      'command-line': 'qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "flush"',
    });
    await killVm(vm); // kill -9: the stored bitmap stays flagged in-use
    vm = null;
    assert.equal((await readImageBitmaps(join(dir, 'd0.qcow2')))[0]?.inconsistent, true);
    vm = await startVm(dir);
    const after = await inspectBitmaps(vm.qmp, nodes, 3);
    assert.deepEqual(
      after.map((s) => [s.mode, s.reason, s.needsResync]),
      [
        ['resync', 'inconsistent', true],
        ['resync', 'missing', true],
        ['resync', 'missing', true],
      ],
    );

    // A resync point exports the whole disks without a bitmap and drops the inconsistent one.
    const p = await createFleecingPoint({ ...opts(), previousGeneration: 3 });
    assert.equal(p.needsResync, true);
    assert.deepEqual(
      p.disks.map((d) => [d.mode, d.metaContext]),
      [
        ['resync', null],
        ['resync', null],
        ['resync', null],
      ],
    );
    assert.deepEqual(await bitmapNames(vm, 'disk0'), ['mamori-4']);
    assert.equal(await readsAs(p.nbdSocket, p.disks[0]!.exportName, 0x78, 640 * KiB, 4 * KiB), true);
    await completeFleecingPoint(vm.qmp, p);
    await assertNoMachinery(vm, p);
    assert.deepEqual(await bitmapNames(vm, 'disk0'), ['mamori-4']);
  });

  it('a stopped VM: bitmaps with qemu-img, exported read-only by a storage daemon', async () => {
    assert.ok(vm !== null);
    await guestWrite(vm, 0, 0x79, 1536 * KiB, 4 * KiB);
    await quitVm(vm); // stores mamori-4
    vm = null;
    const disks = [
      { id: 'disk0', layers: [{ file: join(dir, 'd0.qcow2'), format: 'qcow2' as const }] },
      { id: 'disk1', layers: [{ file: join(dir, 'd1.raw'), format: 'raw' as const }] },
    ];
    const p = await createOfflineFleecingPoint({ disks, runDir: dir, previousGeneration: 4 });
    try {
      assert.deepEqual(
        p.disks.map((d) => [d.mode, d.bitmap, d.metaContext]),
        [
          ['incremental', 'mamori-5', 'qemu:dirty-bitmap:mamori-4'],
          ['resync', null, null],
        ],
      );
      assert.deepEqual(await dirty(p, p.disks[0]!), [[1536 * KiB, 1536 * KiB + G]]);
      // The daemon holds the image: a VM (or anyone writing) cannot open it meanwhile.
      const locked = await runProcess('qemu-io', ['-f', 'qcow2', join(dir, 'd0.qcow2'), '-c', 'write 0 4k'], {
        okCodes: [0, 1],
      });
      assert.equal(locked.code, 1);
      assert.match(locked.stderr, /lock/);
    } catch (e) {
      await abortOfflineFleecingPoint(p);
      throw e;
    }
    await completeOfflineFleecingPoint(p);
    assert.deepEqual(
      (await readImageBitmaps(join(dir, 'd0.qcow2'))).map((b) => [b.name, b.recording]),
      [['mamori-5', true]],
    );
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.startsWith('mamori-fleece')),
      [],
      'daemon sockets and pid file gone',
    );

    // Abort of an offline point keeps the previous bitmap.
    const q = await createOfflineFleecingPoint({ disks: disks.slice(0, 1), runDir: dir, previousGeneration: 5 });
    await abortOfflineFleecingPoint(q);
    assert.deepEqual(
      (await readImageBitmaps(join(dir, 'd0.qcow2'))).map((b) => b.name),
      ['mamori-5'],
    );
  });
});

describe('a stopped VM whose image stands on a backing file (recovered from a replica point, a linked clone)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-fleece-backed-it-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exports what the VM reads: blocks it partly wrote hold the backing file data, not zeros', async () => {
    // The backing: the replica point the VM was recovered from, its guest log up to 76 KiB.
    const point = join(dir, 'point.qcow2');
    const disk = join(dir, 'disk.qcow2');
    await createQcow2(point, { sizeBytes: 4 * MiB });
    await runProcess('qemu-io', ['-f', 'qcow2', point, '-c', `write -P 0x11 0 ${76 * KiB}`]);
    // The VM's image, laid out as a site makes one (4 KiB subclusters), named on the point by its header.
    await createQcow2(disk, { backing: { file: point, format: 'qcow2' } });
    await runProcess('qemu-img', ['bitmap', '--add', disk, 'mamori-1']);
    // The guest writes on at 76 KiB after the last point: 4 KiB of the dirty 64 KiB block at
    // 64 KiB are the image's own, the 12 KiB before them are still the point's.
    await runProcess('qemu-io', ['-f', 'qcow2', disk, '-c', `write -P 0x22 ${76 * KiB} ${4 * KiB}`]);

    const p = await createOfflineFleecingPoint({
      disks: [{ id: 'disk0', layers: [{ file: disk, format: 'qcow2' }] }],
      runDir: dir,
      previousGeneration: 1,
    });
    try {
      const d = p.disks[0]!;
      assert.equal(d.mode, 'incremental');
      assert.deepEqual(await dirty(p, d), [[64 * KiB, 128 * KiB]]);
      // The cycle sends the whole dirty block: its first 12 KiB must be the point's data.
      assert.equal(await readsAs(p.nbdSocket, d.exportName, 0x11, 64 * KiB, 12 * KiB), true, 'backing data, not zeros');
      assert.equal(await readsAs(p.nbdSocket, d.exportName, 0x22, 76 * KiB, 4 * KiB), true);
      assert.equal(await readsAs(p.nbdSocket, d.exportName, 0x11, 0, 64 * KiB), true);
      assert.equal(await readsAs(p.nbdSocket, d.exportName, 0, 80 * KiB, 48 * KiB), true);
    } finally {
      await abortOfflineFleecingPoint(p);
    }
  });
});

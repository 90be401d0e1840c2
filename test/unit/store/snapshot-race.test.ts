import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmRepo, type VmRow } from '../../../src/store/repos/vm-repo.js';
import { DiskRepo } from '../../../src/store/repos/disk-repo.js';
import { SnapshotRepo } from '../../../src/store/repos/snapshot-repo.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { runProcess } from '../../../src/core/run-process.js';
import { LAYERS_DIR, VmSnapshots } from '../../../src/vms/vm-snapshots.js';
import type { Store } from '../../../src/store/store.js';
import type { DiskRecord } from '../../../src/store/records/disk-record.js';
import { describeEachDialect } from '../../harness/store-dialects.js';

/*
 * Snapshots of one stopped VM taken at once by two servers on one database (PostgreSQL), or
 * by requests that no per-VM lock orders (SQLite: one store, its transactions still race).
 * Before: a loser of one name passed the "no such file" check with the winner, qemu-img made
 * the same overlay twice, the loser's insert broke the unique key (a raw error, a 500) and its
 * clean-up removed the winner's overlay; and two names each appended to the list they had
 * read, so one overlay was lost from the disk's chain.
 */

interface Fixture {
  snaps: VmSnapshots[];
  vm: VmRow;
  pool: string;
  disks: DiskRepo;
  repo: SnapshotRepo;
}

async function setUp(first: Store, second: Store, dir: string): Promise<Fixture> {
  const pool = join(dir, 'pool');
  await mkdir(pool, { recursive: true });
  const base = join(pool, 'd1.qcow2');
  await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1M']);
  const disk: DiskRecord = {
    id: 'd1',
    name: 'd1',
    pool: 'default',
    kind: 'image',
    format: 'qcow2',
    path: base,
    sizeBytes: 1 << 20,
    rdmMode: null,
    shared: false,
    vmId: 'v1',
    ownedByVm: true,
    createdAt: '2026-01-01T00:00:00.000Z',
    overlays: [],
  };
  const vms = new VmRepo(first.handle);
  await vms.create(
    {
      id: 'v1',
      name: 'v1',
      vcpus: 1,
      memoryMiB: 64,
      firmware: 'bios',
      machineType: 'pc-q35-8.2',
      diskIds: ['d1'],
      nics: [],
      boot: { kind: 'disk' },
      stopTimeoutSec: 10,
    },
    '2026-01-01T00:00:00.000Z',
    [disk],
    [],
  );
  const vm = await vms.findById('v1');
  assert.ok(vm);
  return {
    snaps: [new VmSnapshots(first.handle, pool), new VmSnapshots(second.handle, pool)],
    vm,
    pool,
    disks: new DiskRepo(first.handle),
    repo: new SnapshotRepo(first.handle),
  };
}

/** Files in the pool's .layers folder (absolute). */
async function layerFiles(pool: string): Promise<string[]> {
  const dir = join(pool, LAYERS_DIR);
  return (await readdir(dir).catch(() => [] as string[])).map((f) => join(dir, f)).sort();
}

describeEachDialect('snapshots taken at once', (f) => {
  let dir = '';
  const open = async (): Promise<[Store, Store]> => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-snaprace-'));
    const first = await f.open();
    // SQLite: one store (two connections in one thread would block on each other's lock).
    return [first, f.dialect === 'postgres' ? await f.reopen() : first];
  };

  test('20 creates of one name: one snapshot, typed conflicts, its overlay kept, nothing left over', async () => {
    const [first, second] = await open();
    try {
      const x = await setUp(first, second, dir);
      const results = await Promise.allSettled(
        x.snaps.flatMap((s) => Array.from({ length: 10 }, () => s.create(x.vm, 'one', null))),
      );
      const ok = results.filter((r) => r.status === 'fulfilled');
      const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      assert.equal(ok.length, 1, 'exactly one create succeeds');
      for (const e of errors) assert.ok(isMamoriError(e, 'SNAPSHOT_EXISTS'), `a typed conflict, not ${String(e)}`);
      const d = await x.disks.findByName('d1');
      assert.equal(d?.overlays.length, 1);
      assert.deepEqual(await layerFiles(x.pool), d?.overlays, 'the overlay the row names exists, and no other file');
      assert.ok((await stat(d!.overlays[0]!)).size > 0, 'the overlay is an image, not an empty claim');
      assert.deepEqual(
        (await x.repo.forVm('v1')).map((s) => s.name),
        ['one'],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('20 creates of different names: each recorded one is in the chain, none lost, nothing orphaned', async () => {
    const [first, second] = await open();
    try {
      const x = await setUp(first, second, dir);
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => x.snaps[i % 2]!.create(x.vm, `s${i}`, null)),
      );
      for (const r of results)
        if (r.status === 'rejected')
          assert.ok(isMamoriError(r.reason, 'VM_DISKS_CHANGED'), `a typed conflict, not ${String(r.reason)}`);
      const made = results.filter((r) => r.status === 'fulfilled').length;
      assert.ok(made >= 1, 'at least one create succeeds');
      const d = await x.disks.findByName('d1');
      const rows = await x.repo.forVm('v1');
      assert.equal(d?.overlays.length, rows.length, 'one overlay per snapshot row');
      assert.equal(rows.length, made, 'one row per create that succeeded');
      assert.deepEqual(await layerFiles(x.pool), [...d!.overlays].sort(), 'every overlay file is in the chain');
      // Each overlay sits on the one below it in the list: the chain the list describes is the real one.
      for (const [i, o] of d!.overlays.entries()) {
        const info = JSON.parse((await runProcess('qemu-img', ['info', '--output=json', '-U', o])).stdout) as {
          'backing-filename'?: string;
        };
        assert.equal(info['backing-filename'], i === 0 ? d!.path : d!.overlays[i - 1]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

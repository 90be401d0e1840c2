import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';
import { DiskRepo } from '../../../src/store/repos/disk-repo.js';
import { SnapshotRepo } from '../../../src/store/repos/snapshot-repo.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import type { VmDefinition } from '../../../src/store/records/vm-definition.js';
import type { DiskRecord } from '../../../src/store/records/disk-record.js';

const def = (id: string, name: string, diskIds: string[]): VmDefinition => ({
  id,
  name,
  vcpus: 1,
  memoryMiB: 64,
  firmware: 'bios',
  machineType: 'pc-q35-8.2',
  diskIds,
  nics: [],
  boot: { kind: 'disk' },
  stopTimeoutSec: 10,
});
const disk = (id: string, vmId: string | null, ownedByVm: boolean): DiskRecord => ({
  id,
  name: id,
  pool: 'default',
  kind: 'image',
  format: 'qcow2',
  path: `/p/${id}.qcow2`,
  sizeBytes: 1 << 20,
  rdmMode: null,
  shared: false,
  vmId,
  ownedByVm,
  createdAt: '2026-01-01T00:00:00.000Z',
  overlays: [],
});

test('vm repo: create, delete and forget are each one transaction over vms, disks and holds', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-vmrepo-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const vms = new VmRepo(store.handle);
    const disks = new DiskRepo(store.handle);
    await disks.insert(disk('kept', null, false));
    await vms.create(
      def('v1', 'one', ['own', 'kept']),
      '2026-01-01T00:00:00.000Z',
      [disk('own', 'v1', true)],
      ['kept'],
    );
    assert.deepEqual((await vms.findByName('one'))?.definition, def('v1', 'one', ['own', 'kept']));
    assert.equal((await disks.findByName('kept'))?.vmId, 'v1');
    // A taken name fails the whole create: no disk row of the second VM remains.
    await assert.rejects(
      vms.create(def('v2', 'one', ['own2']), '2026-01-01T00:00:00.000Z', [disk('own2', 'v2', true)], []),
    );
    assert.equal(await disks.findByName('own2'), undefined);

    await store.db
      .insertInto('replicas')
      .values({
        id: 'r',
        source_site: 'a',
        source_vm_id: 'x',
        vm_name: 'x',
        disks: '[]',
        keep_points: 1,
        created_at: 'now',
      })
      .execute();
    await store.db
      .insertInto('replica_holds')
      .values({ replica_id: 'r', holder: 'vm:v1', point_id: 'p', created_at: 'now' })
      .execute();
    await vms.deleteWithDisks('v1');
    assert.equal(await vms.findById('v1'), undefined);
    assert.equal(await disks.findByName('own'), undefined);
    assert.equal((await disks.findByName('kept'))?.vmId, null);
    assert.equal((await store.db.selectFrom('replica_holds').selectAll().execute()).length, 0);

    await vms.create(def('v3', 'three', ['kept']), '2026-01-01T00:00:00.000Z', [], ['kept']);
    await vms.forget('v3');
    assert.equal(await disks.findByName('kept'), undefined);

    // Snapshots: the row and the overlay lists in one go.
    await vms.create(def('v4', 'four', ['d4']), '2026-01-01T00:00:00.000Z', [disk('d4', 'v4', true)], []);
    const snaps = new SnapshotRepo(store.handle);
    await snaps.record('v4', 's1', '2026-01-02T00:00:00.000Z', true, [
      { diskId: 'd4', below: [], overlay: '/p/d4-s1.qcow2' },
    ]);
    assert.deepEqual((await disks.findByName('d4'))?.overlays, ['/p/d4-s1.qcow2']);
    assert.deepEqual(
      (await snaps.forVm('v4')).map((s) => [s.name, s.running]),
      [['s1', true]],
    );

    // A definition of the wrong shape is refused by name, never passed on.
    await store.db.updateTable('vms').set({ definition: '{"id":"v4"}' }).where('id', '=', 'v4').execute();
    await assert.rejects(vms.findById('v4'), (e) => isMamoriError(e, 'STORE_ROW_INVALID'));
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

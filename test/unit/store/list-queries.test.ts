import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';
import { DiskRepo } from '../../../src/store/repos/disk-repo.js';
import { ReplicationRepo } from '../../../src/store/repos/replication-repo.js';
import { jsonColumn } from '../../../src/store/json-column.js';
import { MIGRATIONS, POSTGRES_MIGRATION_DIALECT, SQLITE_MIGRATION_DIALECT } from '../../../src/store/migrations.js';
import { sql } from 'kysely';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import type { CycleStats } from '../../../src/store/records/replica-record.js';
import type { Store } from '../../../src/store/store.js';
import { describeEachDialect } from '../../harness/store-dialects.js';

const now = '2026-01-01T00:00:00.000Z';

async function addVm(store: Store, id: string, name: string, diskIds: string[] = []): Promise<void> {
  const definition = {
    id,
    name,
    vcpus: 1,
    memoryMiB: 256,
    firmware: 'bios',
    machineType: 'pc-q35-7.2',
    diskIds,
    nics: [],
    boot: { kind: 'disk' },
    stopTimeoutSec: 10,
  };
  await store.db
    .insertInto('vms')
    .values({
      id,
      name,
      definition: JSON.stringify(definition),
      state: 'stopped',
      state_reason: null,
      pid: null,
      last_heartbeat_at: null,
      created_at: now,
      updated_at: now,
    })
    .execute();
}

function cycle(at: string, replica?: CycleStats['replica']): CycleStats {
  return {
    at,
    mode: 'incremental',
    bytesSent: 10,
    bytesChanged: 8,
    durationMs: 5,
    throughputBps: 2000,
    ...(replica ? { replica } : {}),
  };
}

async function replicate(store: Store, vmId: string): Promise<ReplicationRepo> {
  const reps = new ReplicationRepo(store.handle);
  await reps.insert({
    vmId,
    peer: 'b',
    replicaId: `r-${vmId}`,
    rpoMs: 30_000,
    keepPoints: 3,
    state: 'enabled',
    generation: null,
    bandwidthBps: null,
    continuous: null,
    createdAt: now,
    updatedAt: now,
  });
  return reps;
}

describeEachDialect('list queries of GET /vms and GET /replication', (f) => {
  test('listSummaries gives each replication its newest cycle and newest storage report, as the full row does', async () => {
    const store = await f.open();
    await addVm(store, 'v1', 'none-yet');
    await addVm(store, 'v2', 'newest-has-storage');
    await addVm(store, 'v3', 'older-has-storage');
    const reps = await replicate(store, 'v1');
    await replicate(store, 'v2');
    await replicate(store, 'v3');
    const s1 = { points: 1, chainLength: 2, bytes: 3, seedBytes: 0 };
    const s2 = { points: 2, chainLength: 3, bytes: 4, seedBytes: 1 };
    await reps.recordPoint('v2', {
      generation: 2,
      pointId: 'p2',
      pointAt: now,
      stats: [cycle('2026-01-01T00:00:01.000Z', s1), cycle('2026-01-01T00:00:02.000Z', s2)],
    });
    // Written before cycles reported storage: the newest cycle has none, an older one has.
    await reps.recordPoint('v3', {
      generation: 2,
      pointId: 'p2',
      pointAt: now,
      stats: [cycle('2026-01-01T00:00:01.000Z', s1), cycle('2026-01-01T00:00:02.000Z')],
    });
    const byName = new Map((await reps.listSummaries()).map((r) => [r.vmName, r]));
    assert.deepEqual([...byName.keys()].sort(), ['newest-has-storage', 'none-yet', 'older-has-storage']);
    const none = byName.get('none-yet')!;
    assert.deepEqual(
      [none.lastCycle, none.replica, none.vmId, none.rpoMs, none.keepPoints],
      [null, null, 'v1', 30_000, 3],
    );
    assert.deepEqual(byName.get('newest-has-storage')!.lastCycle, cycle('2026-01-01T00:00:02.000Z', s2));
    assert.deepEqual(byName.get('newest-has-storage')!.replica, s2);
    assert.deepEqual(byName.get('older-has-storage')!.lastCycle, cycle('2026-01-01T00:00:02.000Z'));
    assert.deepEqual(byName.get('older-has-storage')!.replica, s1);
    // The same as what the whole row says.
    for (const r of byName.values()) {
      const whole = (await reps.find(r.vmId))!;
      assert.deepEqual(r.lastCycle, whole.stats.at(-1) ?? null);
      assert.equal(r.generation, whole.generation);
      assert.equal(r.lastPointAt, whole.lastPointAt);
    }
  });

  test('a newest cycle of the wrong shape is STORE_ROW_INVALID in the list too', async () => {
    const store = await f.open();
    await addVm(store, 'v1', 'one');
    const reps = await replicate(store, 'v1');
    await store.db.updateTable('replications').set({ stats: '[{"at":1}]', last_cycle: '{"at":1}' }).execute();
    await assert.rejects(reps.listSummaries(), (e) => isMamoriError(e, 'STORE_ROW_INVALID'));
  });

  test("the migration that adds last_cycle fills it from each row's stats", async () => {
    const store = await f.open();
    await addVm(store, 'v1', 'one');
    await addVm(store, 'v2', 'two');
    const reps = await replicate(store, 'v1');
    await replicate(store, 'v2');
    const stats = [
      cycle('2026-01-01T00:00:01.000Z'),
      cycle('2026-01-01T00:00:02.000Z', { points: 1, chainLength: 2, bytes: 3, seedBytes: 0 }),
    ];
    // As a database of the version before has it: stats, and no last_cycle yet.
    await store.db
      .updateTable('replications')
      .set({ stats: JSON.stringify(stats), last_cycle: null })
      .where('vm_id', '=', 'v1')
      .execute();
    // Found by what it does, not by its place: later migrations follow it.
    const dialect = f.dialect === 'postgres' ? POSTGRES_MIGRATION_DIALECT : SQLITE_MIGRATION_DIALECT;
    const steps = MIGRATIONS.map((m) => m(dialect)).filter((s) => s.includes('ADD COLUMN last_cycle'));
    assert.equal(steps.length, 1);
    const step = steps[0]!;
    await sql.raw(step.slice(step.indexOf('UPDATE'))).execute(store.db);
    const byVm = new Map((await reps.listSummaries()).map((r) => [r.vmId, r]));
    assert.deepEqual(byVm.get('v1')!.lastCycle, stats[1]);
    assert.deepEqual(byVm.get('v1')!.replica, stats[1]!.replica);
    assert.deepEqual([byVm.get('v2')!.lastCycle, byVm.get('v2')!.replica], [null, null]);
  });

  test("listShared and listSummaries: the VM list's rows, definitions shared and frozen, disks with the shown columns", async () => {
    const store = await f.open();
    await DiskRepo.insert(store.db, {
      id: 'd1',
      name: 'one-disk0',
      pool: 'default',
      kind: 'image',
      format: 'qcow2',
      path: '/pool/one-disk0.qcow2',
      sizeBytes: 1024,
      rdmMode: null,
      shared: false,
      vmId: null,
      ownedByVm: false,
      createdAt: now,
      overlays: ['/pool/snap.qcow2'],
    });
    await addVm(store, 'v1', 'one', ['d1']);
    const vms = new VmRepo(store.handle);
    const [a] = await vms.listShared();
    const [b] = await vms.listShared();
    assert.deepEqual(a, (await vms.list())[0]);
    assert.equal(a!.definition, b!.definition, 'an unchanged row is decoded once');
    assert.ok(Object.isFrozen(a!.definition) && Object.isFrozen(a!.definition.diskIds));
    assert.throws(() => (a!.definition.diskIds as string[]).push('x'), TypeError);
    // list() still gives a value of the caller's own.
    (await vms.list())[0]!.definition.diskIds.push('mine');
    assert.deepEqual((await vms.listShared())[0]!.definition.diskIds, ['d1']);
    assert.deepEqual(await new DiskRepo(store.handle).listSummaries(), [
      {
        id: 'd1',
        name: 'one-disk0',
        kind: 'image',
        format: 'qcow2',
        path: '/pool/one-disk0.qcow2',
        sizeBytes: 1024,
        rdmMode: null,
        shared: false,
      },
    ]);
  });
});

test('jsonColumn.decodeShared: one value per text, validated like decode, a changed text decoded anew', () => {
  const col = jsonColumn<{ n: number }>('t.c', {
    type: 'object',
    required: ['n'],
    properties: { n: { type: 'number' } },
  });
  const a = col.decodeShared('{"n":1}');
  assert.equal(col.decodeShared('{"n":1}'), a);
  assert.notEqual(col.decode('{"n":1}'), a, 'decode gives a value of its own');
  assert.deepEqual(col.decodeShared('{"n":2}'), { n: 2 });
  assert.throws(
    () => col.decodeShared('{"n":"x"}'),
    (e) => isMamoriError(e, 'STORE_ROW_INVALID'),
  );
  assert.throws(
    () => col.decodeShared('{'),
    (e) => isMamoriError(e, 'STORE_ROW_INVALID'),
  );
});

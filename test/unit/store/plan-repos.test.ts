import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { PlanRunRepo } from '../../../src/store/repos/plan-run-repo.js';
import { RecoveredVmRepo } from '../../../src/store/repos/recovered-vm-repo.js';
import { IncomingMigrationRepo, INCOMING_REASON } from '../../../src/store/repos/incoming-migration-repo.js';
import { StorageArrayRepo } from '../../../src/store/repos/storage-array-repo.js';
import { ProtectionGroupRepo } from '../../../src/store/repos/protection-group-repo.js';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';
import { SecretBox, isSealed } from '../../../src/core/secret-box.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import type { PlanRun } from '../../../src/store/records/plan-run-record.js';
import type { VmDefinition } from '../../../src/store/records/vm-definition.js';

const now = '2026-01-01T00:00:00.000Z';
const def = (id: string, name: string, diskIds: string[] = []): VmDefinition => ({
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

test('plan runs: the row text is what the journal wrote before the repository (same JSON), read back typed; a bad state is refused by name', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-planrepo-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const runs = new PlanRunRepo(store.handle);
    const run: PlanRun = {
      id: 'run-1',
      plan: 'p',
      mode: 'test',
      state: 'waiting',
      peer: 'a',
      options: { pointTime: now },
      prompt: 'check the app',
      snapshot: { plan: { name: 'p' } },
      steps: [{ id: 's1', kind: 'recover', label: 'recover web', vm: 'web', state: 'done' }],
      vms: { web: { vm: 'web', priority: 3, recoveredVmId: 'v9' } },
      arrays: {},
      result: null,
      error: null,
      startedAt: now,
      endedAt: null,
      updatedAt: now,
    };
    await runs.insert(run);
    const row = await store.db.selectFrom('plan_runs').selectAll().executeTakeFirstOrThrow();
    assert.equal(row.options, JSON.stringify({ pointTime: now, prompt: 'check the app' }));
    assert.equal(row.steps, JSON.stringify(run.steps));
    assert.deepEqual(await runs.find('run-1'), run);
    assert.equal(await runs.activeRunOf('p'), 'run-1');
    assert.deepEqual(await runs.markInterrupted(), ['run-1']);
    const after = await runs.find('run-1');
    assert.equal(after?.state, 'interrupted');
    assert.equal(after?.prompt, undefined, 'the prompt shows only while waiting');
    await store.db.updateTable('plan_runs').set({ state: 'exploded' }).execute();
    await assert.rejects(runs.find('run-1'), (e) => isMamoriError(e, 'STORE_ROW_INVALID'));
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('recovered VMs and incoming migrations: the VM, its disks, hold and record are written together', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-recrepo-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    await store.db
      .insertInto('replicas')
      .values({
        id: 'r1',
        source_site: 'a',
        source_vm_id: 'src',
        vm_name: 'web',
        disks: '[]',
        keep_points: 1,
        created_at: now,
      })
      .execute();
    await store.db
      .insertInto('replica_points')
      .values({
        replica_id: 'r1',
        point_id: 'p1',
        time: now,
        consistency: 'crash',
        committed_at: now,
        disk_points: '["p1"]',
      })
      .execute();
    const recovered = new RecoveredVmRepo(store.handle);
    await recovered.create({
      def: def('v1', 'web'),
      disks: [],
      now,
      hold: true,
      record: { runId: 'run-1', mode: 'test', replicaId: 'r1', pointId: 'p1', sourceVmId: 'src' },
    });
    assert.deepEqual(await recovered.madeByRunWithPoint('run-1', 'src'), {
      vmId: 'v1',
      name: 'web',
      pointId: 'p1',
      time: now,
    });
    assert.deepEqual(
      (await recovered.testVms('r1')).map((v) => v.name),
      ['web'],
    );
    // A name taken: nothing of the second VM is written (no hold, no record).
    await assert.rejects(
      recovered.create({
        def: def('v2', 'web'),
        disks: [],
        now,
        hold: true,
        record: { runId: 'run-2', mode: 'test', replicaId: 'r1', pointId: 'p1', sourceVmId: 'src' },
      }),
    );
    assert.equal((await store.db.selectFrom('replica_holds').selectAll().execute()).length, 1);
    assert.equal(await recovered.runHasVms('run-2'), false);
    await recovered.releaseHold('v1');
    await recovered.delete('v1');
    assert.equal(await recovered.runHasVms('run-1'), false);

    const incoming = new IncomingMigrationRepo(store.handle);
    await incoming.begin('v3', 'a', now);
    await incoming.begin('v3', 'b', now);
    assert.equal(await incoming.sourceOf('v3'), 'a');
    await incoming.createVm(def('v3', 'moved'), [], now, { replicaId: 'r1', pointId: 'p1' });
    const vm = await store.db.selectFrom('vms').selectAll().where('id', '=', 'v3').executeTakeFirstOrThrow();
    assert.equal(vm.state_reason, INCOMING_REASON);
    await new VmRepo(store.handle).clearStateReason('v3');
    await incoming.end('v3');
    assert.deepEqual(await incoming.pendingVmIds(), []);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('protection groups and storage arrays: binding, sync state and sealed connection through their codecs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-pgrepo-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const groups = new ProtectionGroupRepo(store.handle);
    const binding = {
      storage: 's',
      arrayId: 'a',
      deviceIds: ['d'],
      peer: 'b',
      forced: false,
      compat: 'ok',
      rpoSeconds: 60,
    };
    await groups.createArrayGroup('pg-1', 'arr', binding, now, () => undefined);
    assert.deepEqual(await groups.arraySync('arr'), { binding, state: null });
    const state = {
      lastPointAt: now,
      lastPoint: 'x',
      lastBytesSent: 5,
      failures: 0,
      lastError: null,
      lastAttemptEndedAt: now,
      recentMs: [10],
    };
    await groups.setArraySync('arr', state);
    assert.deepEqual((await groups.arraySync('arr'))?.state, state);
    assert.deepEqual(
      (await groups.arrayGroups()).map((g) => g.name),
      ['arr'],
    );

    const box = new SecretBox(randomBytes(32));
    const arrays = new StorageArrayRepo(store.handle, box);
    await arrays.insert({ name: 'lab', adapter: 'zfs', connection: { pool: 'tank', password: 'pw' }, createdAt: now });
    const raw = await store.db.selectFrom('storage_arrays').select('connection').executeTakeFirstOrThrow();
    assert.ok(isSealed(raw.connection));
    assert.deepEqual((await arrays.find('lab'))?.connection, { pool: 'tank', password: 'pw' });
    assert.equal(await arrays.delete('lab'), true);
    assert.equal(await arrays.delete('lab'), false);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

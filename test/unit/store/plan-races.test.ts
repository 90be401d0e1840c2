import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PlanRunRepo } from '../../../src/store/repos/plan-run-repo.js';
import { ProtectionGroupRepo } from '../../../src/store/repos/protection-group-repo.js';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';
import { isMamoriError, MamoriError } from '../../../src/core/mamori-error.js';
import type { PlanRun } from '../../../src/store/records/plan-run-record.js';
import type { VmDefinition } from '../../../src/store/records/vm-definition.js';
import type { Store } from '../../../src/store/store.js';
import type { ErrorCode } from '../../../src/core/error-codes.js';
import { describeEachDialect, type StoreFixture } from '../../harness/store-dialects.js';

/*
 * Plans and protection groups written by many requests at once, from two servers on one
 * PostgreSQL database (or one SQLite store, whose transactions still interleave with the
 * awaits between them). Each test runs the racing calls with Promise.allSettled and checks
 * the invariant the code states: one run at a time per VM, a VM in at most one group, a group
 * never emptied, one caller wins a state change.
 */

const now = '2026-01-01T00:00:00.000Z';

const def = (id: string): VmDefinition => ({
  id,
  name: id,
  vcpus: 1,
  memoryMiB: 64,
  firmware: 'bios',
  machineType: 'pc-q35-8.2',
  diskIds: [],
  nics: [],
  boot: { kind: 'disk' },
  stopTimeoutSec: 10,
});

const run = (id: string, plan: string, vmIds: string[], state: PlanRun['state'] = 'running'): PlanRun => ({
  id,
  plan,
  mode: 'test',
  state,
  peer: 'a',
  options: {},
  snapshot: { vms: vmIds.map((v) => ({ vm: { id: v } })) },
  steps: [],
  vms: {},
  arrays: {},
  result: null,
  error: null,
  startedAt: now,
  endedAt: null,
  updatedAt: now,
});

/** The runner's rule, as plan-runner.ts states it: no two runs not ended touch one VM. */
const assertFree =
  (vmIds: string[]) =>
  (active: PlanRun[]): void => {
    for (const other of active) {
      const theirs = (other.snapshot as { vms: { vm: { id: string } }[] }).vms.map((v) => v.vm.id);
      if (theirs.some((v) => vmIds.includes(v)))
        throw new MamoriError('PLAN_BUSY', `run ${other.id} touches the same VMs`);
    }
  };

async function addPlan(store: Store, name: string): Promise<void> {
  await store.db
    .insertInto('plans')
    .values({ name, peer: 'a', spec: '{}', source_text: null, inventory: '{}', created_at: now, updated_at: now })
    .execute();
}

/** Two stores on one database (PostgreSQL: two servers); SQLite: one store, see pool-address-race.test.ts. */
async function twoServers(f: StoreFixture): Promise<[Store, Store]> {
  const first = await f.open();
  if (f.dialect === 'sqlite') return [first, first];
  const second = await f.reopen();
  // Every connection of both pools open before the race: else the first transaction often
  // commits while the others still wait for their connections, and nothing overlaps.
  for (const s of [first, second])
    await Promise.all(Array.from({ length: 10 }, () => s.db.selectFrom('meta').select('key').execute()));
  return [first, second];
}

function rejections(results: PromiseSettledResult<unknown>[]): unknown[] {
  return results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
}

function assertAll(errors: unknown[], code: ErrorCode): void {
  for (const e of errors) assert.ok(isMamoriError(e, code), `${code}, not ${String(e)}`);
}

describeEachDialect('plan and group races', (f) => {
  test('20 starts of runs on one VM (two plans, two servers): one run, the rest PLAN_BUSY', async () => {
    const stores = await twoServers(f);
    await addPlan(stores[0], 'p1');
    await addPlan(stores[0], 'p2');
    const repos = stores.map((s) => new PlanRunRepo(s.handle));
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        repos[i % 2]!.insertUnlessBusy(run(`run-${i}`, i % 3 ? 'p1' : 'p2', ['v1', `own-${i}`]), assertFree(['v1'])),
      ),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one run starts');
    assertAll(rejections(results), 'PLAN_BUSY');
    assert.equal((await repos[0]!.active()).length, 1);
  });

  test('a plan deleted while its runs start: never a run of a plan that is gone', async () => {
    const stores = await twoServers(f);
    const repos = stores.map((s) => new PlanRunRepo(s.handle));
    for (let round = 0; round < 10; round++) {
      const plan = `p${round}`;
      await addPlan(stores[0], plan);
      const results = await Promise.allSettled([
        ...Array.from({ length: 4 }, (_, i) =>
          repos[i % 2]!.insertUnlessBusy(run(`r${round}-${i}`, plan, [`v${round}`]), assertFree([`v${round}`])),
        ),
        repos[1]!.deletePlanUnlessActive(plan),
        repos[0]!.deletePlanUnlessActive(plan),
      ]);
      for (const e of rejections(results))
        assert.ok(isMamoriError(e, 'PLAN_BUSY') || isMamoriError(e, 'PLAN_NOT_FOUND'), `typed, not ${String(e)}`);
      const planLeft = await stores[0].db.selectFrom('plans').select('name').where('name', '=', plan).execute();
      const runs = await stores[0].db.selectFrom('plan_runs').select('id').where('plan', '=', plan).execute();
      assert.ok(runs.length <= 1, 'at most one run');
      assert.equal(planLeft.length, runs.length, 'the plan is kept exactly when a run of it started');
    }
  });

  test('20 resumes and cancels of one interrupted run: exactly one acts', async () => {
    const stores = await twoServers(f);
    await addPlan(stores[0], 'p');
    const repos = stores.map((s) => new PlanRunRepo(s.handle));
    await repos[0]!.insert(run('r', 'p', ['v'], 'interrupted'));
    const won = await Promise.all(
      Array.from({ length: 20 }, (_, i) => repos[i % 2]!.leaveInterrupted('r', i % 2 ? 'running' : 'cancelled', now)),
    );
    assert.equal(won.filter(Boolean).length, 1);
  });

  test('20 groups of one name, and 20 groups of one VM: one each, typed conflicts', async () => {
    const stores = await twoServers(f);
    const vms = new VmRepo(stores[0].handle);
    for (const id of ['a', 'b', 'c']) await vms.create(def(id), now, [], []);
    const repos = stores.map((s) => new ProtectionGroupRepo(s.handle));
    const sameName = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => repos[i % 2]!.createHostGroup(`g${i}`, 'web', i % 2 ? ['a'] : ['b'], now)),
    );
    assert.equal(sameName.filter((r) => r.status === 'fulfilled').length, 1);
    assertAll(rejections(sameName), 'GROUP_EXISTS');

    const sameVm = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => repos[i % 2]!.createHostGroup(`h${i}`, `db${i}`, ['c'], now)),
    );
    assert.equal(sameVm.filter((r) => r.status === 'fulfilled').length, 1);
    assertAll(rejections(sameVm), 'VM_ALREADY_PROTECTED');
  });

  test('one VM added to 10 groups at once: in exactly one, the others told', async () => {
    const stores = await twoServers(f);
    const vms = new VmRepo(stores[0].handle);
    for (let i = 0; i < 10; i++) await vms.create(def(`m${i}`), now, [], []);
    await vms.create(def('x'), now, [], []);
    const repos = stores.map((s) => new ProtectionGroupRepo(s.handle));
    for (let i = 0; i < 10; i++) await repos[0]!.createHostGroup(`g${i}`, `g${i}`, [`m${i}`], now);
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => repos[i % 2]!.addVm(`g${i}`, 'x')));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assertAll(rejections(results), 'VM_ALREADY_PROTECTED');
    const rows = await stores[0].db
      .selectFrom('protection_group_vms')
      .select('group_id')
      .where('vm_id', '=', 'x')
      .execute();
    assert.equal(rows.length, 1);
  });

  test('every VM of a group removed at once: the group keeps one', async () => {
    const stores = await twoServers(f);
    const vms = new VmRepo(stores[0].handle);
    const ids = Array.from({ length: 8 }, (_, i) => `w${i}`);
    for (const id of ids) await vms.create(def(id), now, [], []);
    const repos = stores.map((s) => new ProtectionGroupRepo(s.handle));
    await repos[0]!.createHostGroup('g', 'g', ids, now);
    const results = await Promise.allSettled(ids.map((id, i) => repos[i % 2]!.removeVm('g', id)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, ids.length - 1);
    assertAll(rejections(results), 'INVALID_INPUT');
    assert.equal((await repos[0]!.members('g')).length, 1, 'the group is never emptied');
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildRunSteps } from '../../../src/plans/run-steps.js';
import { checkPlan } from '../../../src/plans/plan-spec.js';
import type { ResolvedPlan } from '../../../src/plans/plan-service.js';
import type { ProtectedVm } from '../../../src/site-roles/protected-site.js';

function vm(name: string): ProtectedVm {
  return {
    id: `id-${name}`,
    name,
    state: 'running',
    group: 'g',
    replicaId: `rep-${name}`,
    rpoSeconds: 300,
    keepPoints: 24,
    lastHeartbeatAt: null,
    definition: {
      id: `id-${name}`,
      name,
      vcpus: 1,
      memoryMiB: 256,
      firmware: 'bios',
      machineType: 'pc-q35-7.2',
      nics: [],
      boot: { kind: 'disk' },
      stopTimeoutSec: 60,
    },
    disks: [{ index: 0, sizeBytes: 1 << 20, pool: 'default' }],
  };
}

function resolved(spec: unknown): ResolvedPlan {
  const s = checkPlan(spec);
  return {
    spec: s,
    peer: 'site-a',
    inventoryFresh: true,
    inventory: {
      site: 'site-a',
      takenAt: '2026-11-27T00:00:00Z',
      groups: [{ name: 'g', vms: Object.keys(s.vms) }],
      vms: Object.keys(s.vms).map(vm),
    },
    vms: Object.entries(s.vms).map(([name, options]) => ({
      vm: vm(name),
      options,
      networks: [],
      testNetworks: [],
      pool: 'default',
    })),
    arrayGroups: [],
  };
}

const PLAN = resolved({
  name: 'p',
  protectionGroups: ['g'],
  vms: { db: { priority: 1 }, app: { priority: 2 }, web: { priority: 2, dependsOn: ['app'] } },
  steps: [
    { after: 'priority 1', command: ['/bin/true'] },
    { before: 'vm web', prompt: 'ready?', modes: ['test'] },
  ],
});

test('a test run: per priority, user steps around VMs, each VM recovered then powered on in its chain', () => {
  const steps = buildRunSteps('test', PLAN, []);
  assert.deepEqual(
    steps.map((s) => [s.phase, s.chain ?? '-', s.kind, s.vm ?? '-']),
    [
      [34, 'db', 'recover', 'db'],
      [34, 'db', 'power-on', 'db'],
      [35, '-', 'command', '-'],
      [37, 'app', 'recover', 'app'],
      [37, 'app', 'power-on', 'app'],
      [37, 'web', 'prompt', 'web'],
      [37, 'web', 'recover', 'web'],
      [37, 'web', 'power-on', 'web'],
    ],
  );
  assert.ok(steps.every((s) => s.state === 'pending'));
  assert.equal(new Set(steps.map((s) => s.id)).size, steps.length, 'step ids are unique');
});

test('planned: test VMs removed, protected VMs shut down last priority first, replicas promoted, then recovery; prompts of test mode left out', () => {
  const steps = buildRunSteps('planned', PLAN, [{ vmId: 'v1', vm: 'db' }]);
  const kinds = steps.map((s) => `${s.kind}:${s.vm ?? '-'}`);
  assert.deepEqual(kinds.slice(0, 8), [
    'cleanup-vm:db',
    'shutdown:app',
    'shutdown:web',
    'shutdown:db',
    'promote:db',
    'promote:app',
    'promote:web',
    'recover:db',
  ]);
  assert.ok(!kinds.includes('prompt:web'));
  const phase = (k: string) => steps.find((s) => `${s.kind}:${s.vm ?? '-'}` === k)!.phase;
  assert.ok(phase('shutdown:app') < phase('shutdown:db'), 'priority 2 goes down before priority 1');
  assert.ok(phase('promote:db') < phase('recover:db'));
});

test('cleanup has only the removal steps', () => {
  assert.deepEqual(
    buildRunSteps('cleanup', PLAN, [
      { vmId: 'v1', vm: 'db' },
      { vmId: 'v2', vm: 'web' },
    ]).map((s) => s.kind),
    ['cleanup-vm', 'cleanup-vm'],
  );
  assert.deepEqual(buildRunSteps('cleanup', PLAN, []), []);
});

/** A plan with one host-based VM (db) and an array-based group `store` holding app and web. */
function mixed(): ResolvedPlan {
  const p = resolved({
    name: 'm',
    protectionGroups: ['g', 'store'],
    vms: { db: { priority: 1 }, app: { priority: 2 }, web: { priority: 2 } },
  });
  for (const v of p.vms.filter((x) => x.vm.name !== 'db')) {
    v.vm.group = 'store';
    v.vm.replicaId = null;
    v.vm.arrayDisks = [
      {
        index: 0,
        deviceId: 'vmstore',
        peer: { arrayId: 'poolb', deviceId: 'vmstore' },
        relativePath: `${v.vm.name}.qcow2`,
        kind: 'image',
        format: 'qcow2',
        sizeBytes: 1 << 20,
      },
    ];
  }
  p.arrayGroups = [
    {
      name: 'store',
      storage: 'arr',
      arrayId: 'poolb',
      deviceIds: ['vmstore'],
      sourceArrayId: 'poola',
      sourceDeviceIds: ['vmstore'],
      forced: false,
      rpoSeconds: null,
    },
  ];
  return p;
}

test('array-based groups: a test run makes the test copies before any of the group is recovered', () => {
  const steps = buildRunSteps('test', mixed(), []);
  const start = steps.find((s) => s.kind === 'array-test-start')!;
  assert.equal(start.group, 'store');
  assert.equal(start.chain, undefined, 'one step for the whole group, not per VM');
  for (const vm of ['app', 'web'])
    assert.ok(start.phase < steps.find((s) => s.kind === 'recover' && s.vm === vm)!.phase);
  assert.equal(steps.filter((s) => s.kind.startsWith('array-')).length, 1);
});

test('array-based groups: planned shuts every VM down, then the protected array takes its last point, then failover; no replica promote for array VMs', () => {
  const steps = buildRunSteps('planned', mixed(), []);
  const phase = (kind: string, vm?: string) =>
    steps.find((s) => s.kind === kind && (vm === undefined || s.vm === vm))!.phase;
  assert.deepEqual(
    steps.filter((s) => s.kind === 'promote').map((s) => s.vm),
    ['db'],
  );
  assert.ok(
    Math.max(phase('shutdown', 'app'), phase('shutdown', 'web'), phase('shutdown', 'db')) <
      phase('array-prepare-failover'),
  );
  assert.ok(phase('array-prepare-failover') < phase('array-failover'));
  assert.ok(phase('array-failover') < phase('recover', 'app'));
  // Test copies left by an earlier test go first (after the test VMs).
  assert.ok(phase('array-test-stop') < phase('shutdown', 'db'));
});

test('array-based groups: cleanup removes the test copies after the test VMs; reprotect reverses the devices instead of seeding per VM', () => {
  const cleanup = buildRunSteps('cleanup', mixed(), [{ vmId: 'v1', vm: 'app' }]);
  assert.deepEqual(
    cleanup.map((s) => s.kind),
    ['cleanup-vm', 'array-test-stop'],
  );
  assert.ok(cleanup[0]!.phase < cleanup[1]!.phase);
  const reprotect = buildRunSteps('reprotect', mixed(), []);
  assert.deepEqual(
    reprotect.map((s) => `${s.kind}:${s.vm ?? s.group}`),
    ['array-prepare-reverse:store', 'array-reverse:store', 'seed-peer:db', 'replicate:db'],
  );
});

test('array-based groups: failback is refused with what to do instead', () => {
  assert.throws(
    () => buildRunSteps('failback', mixed(), []),
    /planned migration the other way.*--mode planned, then --mode reprotect/,
  );
});

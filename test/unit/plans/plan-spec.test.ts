import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { checkPlan, parsePlanYaml, type PlanProblem } from '../../../src/plans/plan-spec.js';
import { parseIpv4Interface } from '../../../src/plans/ipv4-cidr.js';

const GOOD = `name: web-tier
description: the shop
protectionGroups: [shop]
shutdownTimeout: 2m
vms:
  db1:
    priority: 1
    waitHeartbeat: 90s
    recoveryIp: { address: 10.20.0.5/24, gateway: 10.20.0.1, dns: [10.20.0.2] }
    testIp: { address: 192.168.77.5/24 }
  app1:
    priority: 2
    dependsOn: [db1, app2]
  app2:
    priority: 2
  batch:
    powerOn: false
`;

function problems(fn: () => unknown): PlanProblem[] {
  try {
    fn();
  } catch (e) {
    assert.ok(isMamoriError(e, 'INVALID_INPUT'), String(e));
    assert.match(e.message, /nothing was changed/);
    return e.details?.['problems'] as PlanProblem[];
  }
  assert.fail('the plan was accepted');
}

test('a good plan parses with its defaults filled in', () => {
  const p = parsePlanYaml(GOOD);
  assert.equal(p.name, 'web-tier');
  assert.equal(p.shutdownTimeoutSec, 120);
  assert.equal(p.concurrency, 4);
  assert.deepEqual(p.vms['db1'], {
    priority: 1,
    powerOn: true,
    waitHeartbeatSec: 90,
    dependsOn: [],
    recoveryIp: { address: '10.20.0.5/24', gateway: '10.20.0.1', dns: ['10.20.0.2'] },
    testIp: { address: '192.168.77.5/24' },
  });
  assert.deepEqual(p.vms['batch'], { priority: 3, powerOn: false, waitHeartbeatSec: 300, dependsOn: [] });
  assert.deepEqual(p.vms['app1']!.dependsOn, ['db1', 'app2'], 'on an earlier priority and on the same one');
});

test('YAML that does not parse names its line', () => {
  const ps = problems(() => parsePlanYaml('name: x\nvms:\n  a: [1,\n', 'plan.yaml'));
  assert.ok(ps.length > 0 && ps[0]!.line !== null && ps[0]!.line >= 3, JSON.stringify(ps));
});

test('unknown keys, bad values and bad IPs are all reported, each with its line', () => {
  const yaml = `name: p
protectionGroups: [g]
colour: blue
vms:
  a:
    prority: 2
    priority: 9
    waitHeartbeat: soon
    recoveryIp: { address: 10.0.0.0/24 }
    testIp: { address: 10.0.0.5/24, gateway: 10.0.1.1 }
  b:
    recoveryIp: { address: 10.0.0.5 }
`;
  const ps = problems(() => parsePlanYaml(yaml, 'plan.yaml'));
  const at = (path: string) => ps.find((p) => p.path === path);
  assert.equal(at('colour')?.line, 3);
  assert.match(at('colour')!.message, /unknown key "colour"/);
  assert.equal(at('vms.a.prority')?.line, 6);
  assert.equal(at('vms.a.priority')?.line, 7);
  assert.match(at('vms.a.priority')!.message, /from 1 to 5/);
  assert.equal(at('vms.a.waitHeartbeat')?.line, 8);
  assert.match(at('vms.a.recoveryIp.address')!.message, /network address/);
  assert.match(at('vms.a.testIp.gateway')!.message, /outside the network/);
  assert.equal(at('vms.a.testIp.gateway')?.line, 10);
  assert.match(at('vms.b.recoveryIp.address')!.message, /no prefix length/);
});

test('dependencies: cycles, later priorities, unknown and self are refused', () => {
  const base = { name: 'p', protectionGroups: ['g'] };
  const cyc = problems(() =>
    checkPlan({ ...base, vms: { a: { dependsOn: ['b'] }, b: { dependsOn: ['c'] }, c: { dependsOn: ['a'] } } }),
  );
  assert.equal(cyc.length, 1, JSON.stringify(cyc));
  assert.match(cyc[0]!.message, /dependency cycle: a -> b -> c -> a/);
  const later = problems(() =>
    checkPlan({ ...base, vms: { a: { priority: 1, dependsOn: ['b'] }, b: { priority: 2 } } }),
  );
  assert.match(later[0]!.message, /depends on b of the later priority 2/);
  const unknown = problems(() => checkPlan({ ...base, vms: { a: { dependsOn: ['ghost'] } } }));
  assert.match(unknown[0]!.message, /ghost, which the plan does not list/);
  const self = problems(() => checkPlan({ ...base, vms: { a: { dependsOn: ['a'] } } }));
  assert.match(self[0]!.message, /depends on itself/);
});

test('IPv4 interfaces', () => {
  assert.deepEqual(parseIpv4Interface('10.1.2.3/24'), {
    address: '10.1.2.3',
    prefix: 24,
    network: 0x0a010200,
    broadcast: 0x0a0102ff,
  });
  assert.match(parseIpv4Interface('10.1.2.255/24') as string, /broadcast/);
  assert.match(parseIpv4Interface('10.1.2.3/33') as string, /prefix length/);
  assert.match(parseIpv4Interface('10.1.2.256/24') as string, /not an IPv4 address/);
  assert.match(parseIpv4Interface('010.1.2.3/24') as string, /not an IPv4 address/);
  assert.equal(typeof parseIpv4Interface('10.1.2.3/32'), 'object', 'a host route is allowed');
});

test('steps: commands and prompts before or after a priority group or a VM, checked with their lines', () => {
  const good = parsePlanYaml(`name: p
protectionGroups: [g]
vms:
  db: { priority: 1 }
steps:
  - after: priority 1
    command: ["/usr/bin/logger", "db up"]
    timeout: 45s
  - before: vm db
    prompt: "is the SAN zoned?"
    modes: [planned, disaster]
`);
  assert.deepEqual(good.steps, [
    {
      at: 'after',
      scope: { kind: 'priority', priority: 1 },
      action: { kind: 'command', argv: ['/usr/bin/logger', 'db up'], timeoutSec: 45 },
      modes: ['test', 'planned', 'disaster'],
    },
    {
      at: 'before',
      scope: { kind: 'vm', vm: 'db' },
      action: { kind: 'prompt', message: 'is the SAN zoned?' },
      modes: ['planned', 'disaster'],
    },
  ]);
  assert.equal(good.protectedSite, null);
  const ps = problems(() =>
    parsePlanYaml(
      `name: p
protectionGroups: [g]
vms:
  db: {}
steps:
  - after: priority 9
    command: ["/bin/true"]
  - before: vm ghost
    prompt: hi
  - before: priority 1
    command: "rm -rf /"
  - after: priority 1
    before: priority 2
    prompt: both
  - after: priority 2
    prompt: wait
    timeout: 5s
  - after: priority 2
    command: ["/bin/true"]
    modes: [sometimes]
`,
      'plan.yaml',
    ),
  );
  const msg = (path: string) => ps.find((p) => p.path === path);
  assert.match(msg('steps.0.after')!.message, /"priority N" \(1-5\) or "vm NAME"/);
  assert.equal(msg('steps.0.after')!.line, 6);
  assert.match(msg('steps.1.before')!.message, /does not list ghost/);
  assert.match(msg('steps.2.command')!.message, /absolute program path.*no shell/);
  assert.match(msg('steps.3')!.message, /exactly one of before or after/);
  assert.match(msg('steps.4.timeout')!.message, /no timeout/);
  assert.match(msg('steps.5.modes')!.message, /modes is a list of test, planned, disaster/);
});

test('a plan recovers groups, VMs named one by one, or both; it needs one of them', () => {
  const single = checkPlan({ name: 'failover-db1', protectedVms: ['db1'] });
  assert.deepEqual(single.protectionGroups, []);
  assert.deepEqual(single.protectedVms, ['db1']);
  assert.deepEqual(checkPlan({ name: 'p', protectionGroups: ['g'], protectedVms: ['x'] }).protectedVms, ['x']);
  assert.deepEqual(checkPlan({ name: 'p', protectionGroups: ['g'] }).protectedVms, []);
  const none = problems(() => checkPlan({ name: 'p' }));
  assert.match(
    none.map((p) => p.message).join('\n'),
    /one or more protection groups \(protectionGroups\) or protected VMs \(protectedVms\)/,
  );
  const twice = problems(() => checkPlan({ name: 'p', protectedVms: ['a', 'a'], protectionGroups: ['bad name'] }));
  assert.deepEqual(twice.map((p) => p.path).sort(), ['protectedVms', 'protectionGroups']);
});

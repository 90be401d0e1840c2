import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MamoriError } from '../../../src/core/mamori-error.js';
import { checkPlan, parsePlanYaml, type PlanProblem } from '../../../src/plans/plan-spec.js';

/**
 * Plans written to knock the parser over (issue 18): each test is one reproduction. They
 * assert the outcome (a typed error, a bounded message), never a time.
 */

/** The MamoriError fn throws; fails on a result or on any other exception. */
function refusal(fn: () => unknown): MamoriError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof MamoriError, `not a MamoriError: ${String(e).slice(0, 300)}`);
    return e;
  }
  assert.fail('the plan was accepted');
}

function problemsOf(e: MamoriError): PlanProblem[] {
  assert.equal(e.code, 'INVALID_INPUT', e.message.slice(0, 300));
  return e.details?.['problems'] as PlanProblem[];
}

/** The error as the API would send it: small whatever the plan was. */
function wireSize(e: MamoriError): number {
  return JSON.stringify(e.toJSON()).length;
}

const HEAD = 'name: p\nprotectionGroups: [g]\n';

test('a 0.9 MB plan of 90k keys is refused at once as too large, in a short message', () => {
  const text = HEAD + 'vms:\n' + Array.from({ length: 90_000 }, (_, i) => `  vm${i}: {}`).join('\n') + '\n';
  assert.ok(text.length > 900_000);
  const e = refusal(() => parsePlanYaml(text));
  assert.equal(e.code, 'PLAN_TOO_LARGE');
  assert.match(e.message, /at most 262144 bytes/);
  assert.ok(wireSize(e) < 1000, `${wireSize(e)} bytes`);
});

test('a plan within the byte limit with 20k unknown keys lists at most 50 problems, then how many more', () => {
  const text = HEAD + Array.from({ length: 20_000 }, (_, i) => `k${i}: 1`).join('\n') + '\n';
  const e = refusal(() => parsePlanYaml(text));
  const ps = problemsOf(e);
  assert.equal(ps.length, 50);
  assert.equal(e.details?.['more'], 19_950);
  assert.match(e.message, /and 19950 more problems/);
  assert.ok(wireSize(e) < 30_000, `${wireSize(e)} bytes`);
});

test('a 20,000-VM dependency chain is a typed error, not a stack overflow', () => {
  const vms: Record<string, unknown> = {};
  for (let i = 0; i < 20_000; i++) vms[`vm${i}`] = { dependsOn: i + 1 < 20_000 ? [`vm${i + 1}`] : [] };
  const e = refusal(() => checkPlan({ name: 'p', protectionGroups: ['g'], vms }));
  assert.equal(e.code, 'PLAN_TOO_LARGE');
  assert.match(e.message, /at most 2000 VMs/);
  assert.ok(wireSize(e) < 1000);
});

test('a dependency chain within the VM limit is walked without recursion; too long a chain is refused', () => {
  const chain = (n: number, cycle: boolean): Record<string, unknown> => {
    const vms: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) vms[`vm${i}`] = { dependsOn: i + 1 < n ? [`vm${i + 1}`] : cycle ? ['vm0'] : [] };
    return { name: 'p', protectionGroups: ['g'], vms };
  };
  const ok = checkPlan(chain(100, false));
  assert.deepEqual(ok.vms['vm0']!.dependsOn, ['vm1']);
  const long = problemsOf(refusal(() => checkPlan(chain(2000, false))));
  assert.equal(long.length, 1);
  assert.match(long[0]!.message, /a dependency chain may be at most 100 VMs long/);
  const ring = problemsOf(refusal(() => checkPlan(chain(2000, true))));
  assert.equal(ring.length, 1, JSON.stringify(ring).slice(0, 500));
  assert.match(ring[0]!.message, /^dependency cycle: vm0 -> vm1 -> .* -> vm0 \(2000 VMs\)$/);
  assert.ok(ring[0]!.message.length < 300);
});

test('a __proto__ mapping is refused (YAML at any depth, and JSON), never becomes a prototype', () => {
  for (const yaml of [
    `${HEAD}__proto__:\n  polluted: true\n`,
    `${HEAD}vms:\n  a:\n    __proto__: { priority: 1 }\n`,
    `${HEAD}vms:\n  __proto__: {}\n`,
  ]) {
    const ps = problemsOf(refusal(() => parsePlanYaml(yaml)));
    assert.ok(
      ps.some((p) => /"__proto__" is not allowed/.test(p.message)),
      JSON.stringify(ps),
    );
  }
  const json = JSON.parse('{"name":"p","protectionGroups":["g"],"vms":{"a":{"__proto__":{"priority":1}}}}') as unknown;
  const ps = problemsOf(refusal(() => checkPlan(json)));
  assert.equal(ps[0]!.path, 'vms.a.__proto__');
  assert.match(ps[0]!.message, /"__proto__" is not allowed/);
  assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
});

test('constructor and prototype keys are refused; inherited names are not VMs', () => {
  for (const yaml of [
    `${HEAD}vms:\n  constructor: {}\n`,
    `${HEAD}vms:\n  a: { prototype: 1 }\n`,
    `${HEAD}constructor: x\n`,
  ]) {
    const ps = problemsOf(refusal(() => parsePlanYaml(yaml)));
    assert.ok(
      ps.some((p) => /"(constructor|prototype)" is not allowed/.test(p.message)),
      JSON.stringify(ps),
    );
  }
  const ps = problemsOf(
    refusal(() =>
      parsePlanYaml(
        `${HEAD}vms:\n  a: { dependsOn: [toString] }\nsteps:\n  - after: vm hasOwnProperty\n    prompt: hi\n`,
      ),
    ),
  );
  assert.match(
    ps.find((p) => p.path === 'vms.a.dependsOn')!.message,
    /depends on toString, which the plan does not list/,
  );
  assert.match(ps.find((p) => p.path === 'steps.0.after')!.message, /does not list hasOwnProperty/);
});

test('valid YAML aliases are accepted and expanded', () => {
  const p = parsePlanYaml(`${HEAD}vms:
  db1: &db { priority: 1, waitHeartbeat: 90s, recoveryIp: { address: 10.0.0.5/24, dns: &dns [10.0.0.2, 10.0.0.3] } }
  db2: { priority: 1, recoveryIp: { address: 10.0.0.6/24, dns: *dns } }
  db3: *db
steps:
  - after: priority 1
    command: &log ["/usr/bin/logger", "db up"]
  - after: priority 2
    command: *log
`);
  assert.deepEqual(p.vms['db3'], p.vms['db1']);
  assert.equal(p.vms['db3']!.waitHeartbeatSec, 90);
  assert.deepEqual(p.vms['db2']!.recoveryIp?.dns, ['10.0.0.2', '10.0.0.3']);
  assert.deepEqual(p.steps[1]!.action, { kind: 'command', argv: ['/usr/bin/logger', 'db up'], timeoutSec: 300 });
});

test('a billion-laughs alias bomb is refused as too large', () => {
  const lines = ['a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
  for (let i = 1; i < 10; i++)
    lines.push(`a${i}: &a${i} [${Array.from({ length: 10 }, () => `*a${i - 1}`).join(', ')}]`);
  const e = refusal(() => parsePlanYaml(`${HEAD}${lines.join('\n')}\n`));
  assert.equal(e.code, 'PLAN_TOO_LARGE');
  assert.match(e.message, /at most 50000 values/);
});

test('bad aliases are typed errors: to no anchor, or to the node holding them', () => {
  const none = problemsOf(refusal(() => parsePlanYaml(`${HEAD}vms: *nowhere\n`)));
  assert.ok(
    none.some((p) => /alias/.test(p.message)),
    JSON.stringify(none),
  );
  const selfRef = refusal(() => parsePlanYaml(`${HEAD}vms: &v { a: { dependsOn: *v } }\n`));
  assert.match(selfRef.message, /alias/);
});

test('a huge name is never echoed: messages quote at most 64 characters of a value', () => {
  const huge = 'x'.repeat(900_000);
  const e = refusal(() =>
    checkPlan({
      name: huge,
      description: huge,
      protectionGroups: [huge],
      vms: { [huge]: { dependsOn: [huge] } },
      [huge]: 1,
    }),
  );
  assert.ok(wireSize(e) < 5000, `${wireSize(e)} bytes`);
  const vm = refusal(() =>
    checkPlan({
      name: 'p',
      protectionGroups: ['g'],
      vms: { a: { dependsOn: ['y'.repeat(4000)] }, ['z'.repeat(4000)]: {} },
    }),
  );
  assert.ok(wireSize(vm) < 3000, `${wireSize(vm)} bytes`);
  assert.match(vm.message, /"z{64}…"/);
  const yaml = refusal(() => parsePlanYaml(`name: ${'n'.repeat(200_000)}\nprotectionGroups: [g]\n`));
  assert.ok(wireSize(yaml) < 3000, `${wireSize(yaml)} bytes`);
});

test('the same problem is listed once', () => {
  const ps = problemsOf(refusal(() => parsePlanYaml(`${HEAD}vms:\n  a: { dependsOn: [ghost, ghost, ghost] }\n`)));
  assert.equal(ps.length, 1, JSON.stringify(ps));
});

test('duplicate keys are still refused, with their line', () => {
  const ps = problemsOf(refusal(() => parsePlanYaml(`${HEAD}vms:\n  a: {}\n  a: {}\n`)));
  assert.equal(ps.length, 1, JSON.stringify(ps));
  assert.equal(ps[0]!.line, 5);
  assert.match(ps[0]!.message, /twice/);
});

test('deep nesting is a typed error, in YAML and in JSON', () => {
  assert.equal(
    refusal(() => parsePlanYaml(`${HEAD}vms: ${'['.repeat(50_000)}${']'.repeat(50_000)}\n`)).code,
    'PLAN_TOO_LARGE',
  );
  assert.equal(refusal(() => parsePlanYaml(`${HEAD}vms: ${'['.repeat(40)}${']'.repeat(40)}\n`)).code, 'PLAN_TOO_LARGE');
  let deep: unknown = 1;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  const e = refusal(() => checkPlan({ name: 'p', protectionGroups: ['g'], vms: { a: { dependsOn: deep } } }));
  assert.equal(e.code, 'PLAN_TOO_LARGE');
  const cyclic: Record<string, unknown> = { name: 'p', protectionGroups: ['g'] };
  cyclic['vms'] = { a: cyclic };
  refusal(() => checkPlan(cyclic));
});

test('odd documents end in a result or a MamoriError', () => {
  const inputs = [
    '',
    '---',
    '- 1',
    '"just text"',
    '!!binary aGk=',
    '&a [*a]',
    'a: *b\nb: &b 1',
    '? [a]\n: 1',
    '{',
    '\t',
    '\u0000',
    `${HEAD}<<: { x: 1 }`,
    `${HEAD}vms: !!set { a, b }`,
    `${HEAD}vms:\n  ? { a: 1 }\n  : {}`,
    `${HEAD}---\n${HEAD}`,
    `${HEAD}vms: { 123: {} }`,
    `${HEAD}steps: [{ after: "vm ${'v'.repeat(5000)}", prompt: x }]`,
    `${HEAD}vms: { a: { recoveryIp: { address: "${'1'.repeat(3000)}/24" } } }`,
  ];
  for (const text of inputs) {
    try {
      parsePlanYaml(text);
    } catch (e) {
      assert.ok(e instanceof MamoriError, `${JSON.stringify(text.slice(0, 40))}: ${String(e)}`);
      assert.ok(wireSize(e) < 5000, `${JSON.stringify(text.slice(0, 40))}: ${wireSize(e)} bytes`);
    }
  }
});

import { parsePlanYaml } from '../../../src/plans/plan-spec.js';
import type { FuzzTarget } from '../fuzz-target.js';
import fc from 'fast-check';
import { jsonInputs } from '../json-mutations.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';

/** Plans as people write them (plan-spec.test.ts's good plan, and the same as flow-style JSON, which YAML reads too). */
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
const JSON_PLAN = JSON.stringify(
  {
    name: 'p',
    protectionGroups: ['g'],
    vms: { a: { priority: 1, dependsOn: ['b'] }, b: { priority: 1, recoveryIp: { address: '10.0.0.1/8' } } },
  },
  null,
  1,
);
const YAML_TOKENS = [
  '&a',
  '*a',
  '<<',
  '!!str',
  '!!binary',
  '!!js/function',
  '---',
  '...',
  '? ',
  '|',
  '>',
  '- ',
  '%YAML 1.1',
  '~',
  '.inf',
  '0x10',
  '1e1000',
  '10.20.0.5/33',
  '999s',
  '-1m',
];

/**
 * parsePlanYaml (which calls checkPlan). plan-spec.ts is being hardened elsewhere and is not
 * changed here: a non-MamoriError or a hang from it is reported as a finding to hand over.
 */
export const planSpecTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'plan-spec',
  seeds: async () => [textSeed('yaml', GOOD), textSeed('json', JSON_PLAN)],
  inputs: (seeds) =>
    fc.oneof(
      textInputs(seeds, YAML_TOKENS),
      jsonInputs(
        seeds.filter((s) => s.name === 'json'),
        ['priority', 'dependsOn', 'recoveryIp', 'waitHeartbeat'],
      ),
    ),
  run(input) {
    parsePlanYaml(input.text, 'fuzz.yaml');
  },
};

import fc from 'fast-check';
import { decodeAdapterResponse } from '../../../src/adapters/adapter-client.js';
import type { AdapterCommand } from '../../../src/adapters/adapter-protocol.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { jsonInputs } from '../json-mutations.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';

/** Responses a storage adapter writes on stdout, one per kind of result, and an error. */
const RESPONSES: [AdapterCommand, unknown][] = [
  [
    'queryInfo',
    {
      protocol: 1,
      result: { name: 'zfs', vendor: 'mamori', version: '1.0.0', protocolVersions: [1], description: 'ZFS datasets' },
    },
  ],
  [
    'queryCapabilities',
    {
      protocol: 1,
      result: {
        commands: ['queryInfo', 'syncOnce', 'failover'],
        features: { testFailover: true, reverseReplication: true, consistencyGroups: false },
        deviceKinds: ['filesystem'],
      },
    },
  ],
  [
    'queryErrorDefinitions',
    { protocol: 1, result: { errors: [{ code: 'POOL_BUSY', description: 'the pool is busy', retryable: true }] } },
  ],
  [
    'discoverDevices',
    {
      protocol: 1,
      result: {
        devices: [
          {
            id: 'tank/vm1',
            name: 'vm1',
            kind: 'volume',
            sizeBytes: 1073741824,
            path: '/dev/zvol/tank/vm1',
            role: 'source',
            peer: { arrayId: 'b', deviceId: 'tank/vm1' },
            consistencyGroup: null,
          },
        ],
        consistencyGroups: [{ id: 'cg1', deviceIds: ['tank/vm1'] }],
      },
    },
  ],
  [
    'querySyncStatus',
    {
      protocol: 1,
      result: {
        devices: [
          { id: 'tank/vm1', lastPoint: 'p1', lastPointAt: '2026-12-05T16:00:00Z', peerLastPoint: null, inSync: true },
        ],
      },
    },
  ],
  ['failover', { protocol: 1, result: { devices: [{ id: 'tank/vm1', point: 'p1', path: null }] } }],
  ['syncOnce', { protocol: 1, error: { code: 'POOL_BUSY', message: 'the pool is busy', details: { pool: 'tank' } } }],
];

const JSON_TOKENS = [
  '{}',
  '[]',
  '{',
  '}',
  '[',
  ']',
  ',',
  ':',
  '"',
  '\\u0000',
  '\\ud800',
  '1e400',
  '-1',
  '1.5',
  '"result"',
  '"error"',
  '"protocol"',
  '2',
  'null',
  '"__proto__"',
  '"constructor"',
  '"devices"',
  '"code"',
  '"lowercase"',
];

interface AdapterSeed extends TextSeed {
  command: AdapterCommand;
}
interface AdapterInput extends TextInput {
  command: AdapterCommand;
}

/** decodeAdapterResponse: what AdapterClient makes of an adapter's stdout. It returns; it never throws. */
export const adapterResponseTarget: FuzzTarget<AdapterSeed, AdapterInput> = {
  name: 'adapter-response',
  seeds: async () =>
    RESPONSES.flatMap(([command, r]) => [
      { ...textSeed(command, JSON.stringify(r)), command },
      { ...textSeed(`${command} (pretty)`, JSON.stringify(r, null, 1)), command },
    ]),
  inputs: (seeds) =>
    fc
      .constantFrom(...seeds)
      .chain((seed) =>
        fc.oneof(textInputs([seed], JSON_TOKENS), jsonInputs([seed])).map((t) => ({ ...t, command: seed.command })),
      ),
  run(input) {
    decodeAdapterResponse(input.command, input.text);
  },
};

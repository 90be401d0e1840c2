import { jsonColumn } from '../json-column.js';

/**
 * The records of desktop pools as the store keeps them (pools/ builds and checks them): the
 * spec, the operation under way, a replica's files. Defined here, below pools/, so the
 * store's repositories know rows, not services (issue 20).
 */

/** The guest OS read from a master's snapshot (pools/master-guest.ts). */
export type GuestOs = 'linux' | 'windows' | 'unknown';

/** How the desktops' first NIC gets its address (pools/pool-network.ts checks the input). */
export type PoolNetwork =
  | { mode: 'dhcp' }
  | { mode: 'static'; first: string; last: string; prefix: number; gateway: string | null; dns: string[] };

/** The pool as stored: the operator's input made explicit, and the master by id (names change). */
export interface PoolSpec {
  master: { vmId: string; name: string };
  snapshot: string;
  size: number;
  spare: number;
  namePattern: string;
  persistentDiskBytes: number | null;
  disposableDiskBytes: number | null;
  storage: string[];
  commands: string[];
  licenseCommand: string | null;
  kmsHost: string | null;
  /** Read from the master's snapshot at creation; absent in pools made before it was ('unknown'). */
  guestOs?: GuestOs;
  licenseTimeoutSec: number;
  skipLicenseActivation: boolean;
  concurrency: number;
  maintenanceConcurrency: number;
  /** Absent: no network customization (and in pools made before it was). */
  network?: PoolNetwork;
}

/**
 * What a pool is doing, recorded in its row before the work starts (pools/pool-operation.ts).
 * The options are the operator's, kept so a resumed run decides as the first did.
 */
export type PoolOperation =
  | { kind: 'provision' }
  | { kind: 'delete' }
  | { kind: 'refresh'; force: boolean }
  | { kind: 'recompose'; snapshot: string; force: boolean }
  | { kind: 'rebalance'; storage: string[]; force: boolean }
  | { kind: 'resize'; size: number; force: boolean };

const str = { type: 'string' };
const int = { type: 'integer' };
const bool = { type: 'boolean' };
const strings = { type: 'array', items: str };
const intOrNull = { type: ['integer', 'null'] };
const strOrNull = { type: ['string', 'null'] };

const networkSchema = {
  oneOf: [
    { type: 'object', required: ['mode'], properties: { mode: { const: 'dhcp' } } },
    {
      type: 'object',
      required: ['mode', 'first', 'last', 'prefix', 'gateway', 'dns'],
      properties: { mode: { const: 'static' }, first: str, last: str, prefix: int, gateway: strOrNull, dns: strings },
    },
  ],
};

/**
 * desktop_pools.spec. Required are the fields every pool had from the first version; the
 * others are checked when present (a pool made before one existed is read as it was).
 */
export const poolSpecColumn = jsonColumn<PoolSpec>('desktop_pools.spec', {
  type: 'object',
  required: ['master', 'snapshot', 'size', 'namePattern', 'storage'],
  properties: {
    master: { type: 'object', required: ['vmId', 'name'], properties: { vmId: str, name: str } },
    snapshot: str,
    size: int,
    spare: int,
    namePattern: str,
    persistentDiskBytes: intOrNull,
    disposableDiskBytes: intOrNull,
    storage: strings,
    commands: strings,
    licenseCommand: strOrNull,
    kmsHost: strOrNull,
    guestOs: { enum: ['linux', 'windows', 'unknown'] },
    licenseTimeoutSec: int,
    skipLicenseActivation: bool,
    concurrency: int,
    maintenanceConcurrency: int,
    network: networkSchema,
  },
});

/** desktop_pools.operation: the operation under way or cut; null once it ended well. */
export const poolOperationColumn = jsonColumn<PoolOperation>('desktop_pools.operation', {
  oneOf: [
    { type: 'object', required: ['kind'], properties: { kind: { enum: ['provision', 'delete'] } } },
    { type: 'object', required: ['kind', 'force'], properties: { kind: { const: 'refresh' }, force: bool } },
    {
      type: 'object',
      required: ['kind', 'snapshot', 'force'],
      properties: { kind: { const: 'recompose' }, snapshot: str, force: bool },
    },
    {
      type: 'object',
      required: ['kind', 'storage', 'force'],
      properties: { kind: { const: 'rebalance' }, storage: strings, force: bool },
    },
    {
      type: 'object',
      required: ['kind', 'size', 'force'],
      properties: { kind: { const: 'resize' }, size: int, force: bool },
    },
  ],
});

/** pool_replicas.files: the replica's images, one per master disk, in disk order. */
export const poolReplicaFilesColumn = jsonColumn<string[]>('pool_replicas.files', strings);

/**
 * The storage adapter protocol, version 1 (docs/adapters.md): mamori's open equivalent of
 * SRM's Storage Replication Adapters. An adapter is an executable. mamori runs it once per
 * command with one JSON request on stdin and reads one JSON response on stdout; stderr
 * carries progress lines (`{"progress":0.4,"message":"..."}`) and free text for the log.
 * Exit 0 with a response (a result or an error); anything else is the adapter failing.
 *
 * This file is the protocol's one definition: the TypeScript types the code uses and the
 * JSON schemas mamori checks every response against (and prints with
 * `mamori adapter schema`), so a vendor's adapter is held to exactly what is written here.
 */
export const PROTOCOL_VERSION = 1;

export const ADAPTER_COMMANDS = [
  'queryInfo',
  'queryCapabilities',
  'queryConnectionParameters',
  'queryErrorDefinitions',
  'discoverArrays',
  'discoverDevices',
  'queryReplicationSettings',
  'syncOnce',
  'querySyncStatus',
  'testFailoverStart',
  'testFailoverStop',
  'prepareFailover',
  'failover',
  'prepareReverseReplication',
  'reverseReplication',
  'restoreReplication',
] as const;
export type AdapterCommand = (typeof ADAPTER_COMMANDS)[number];

/** Commands every adapter must answer: mamori asks them before anything else. */
export const REQUIRED_COMMANDS: readonly AdapterCommand[] = [
  'queryInfo',
  'queryCapabilities',
  'queryConnectionParameters',
  'queryErrorDefinitions',
  'discoverArrays',
  'discoverDevices',
];

/** Codes any adapter may answer without declaring them; every other code must be declared. */
export const GENERIC_ERROR_CODES = [
  'INVALID_REQUEST',
  'UNKNOWN_COMMAND',
  'ARRAY_NOT_FOUND',
  'DEVICE_NOT_FOUND',
  'CONNECTION_FAILED',
  'INTERNAL',
] as const;

export interface AdapterRequest {
  protocol: typeof PROTOCOL_VERSION;
  command: AdapterCommand;
  /** The values of the parameters queryConnectionParameters declares (secrets included). */
  connection: Record<string, string>;
  arguments: Record<string, unknown>;
}

export interface AdapterErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}
export type AdapterResponse =
  | { protocol: typeof PROTOCOL_VERSION; result: unknown }
  | { protocol: typeof PROTOCOL_VERSION; error: AdapterErrorBody };

export interface PeerRef {
  arrayId: string;
  deviceId: string;
}

/** A replicated unit: a filesystem (a ZFS dataset, a NAS share) or a volume (a LUN, a zvol). */
export interface AdapterDevice {
  id: string;
  name: string;
  kind: 'filesystem' | 'volume';
  sizeBytes: number;
  /** Where this host reaches it: a mount point or a device node; null when not exposed here (a replica). */
  path: string | null;
  /** source: replicates to its peer; target: receives; failedOver: a promoted target; testing: has a test copy; unreplicated. */
  role: 'source' | 'target' | 'failedOver' | 'unreplicated';
  peer: PeerRef | null;
  consistencyGroup: string | null;
}

export interface AdapterResults {
  queryInfo: { name: string; vendor: string; version: string; protocolVersions: number[]; description: string };
  queryCapabilities: {
    commands: AdapterCommand[];
    features: { testFailover: boolean; reverseReplication: boolean; consistencyGroups: boolean };
    deviceKinds: ('filesystem' | 'volume')[];
  };
  queryConnectionParameters: {
    parameters: { name: string; description: string; required: boolean; secret: boolean }[];
  };
  queryErrorDefinitions: { errors: { code: string; description: string; retryable: boolean }[] };
  /**
   * `features`, optional: the array's enabled or active feature names (OpenZFS feature flags,
   * e.g. bookmarks); the compatibility guide matches rows that require features against it.
   */
  discoverArrays: {
    arrays: {
      id: string;
      name: string;
      model: string;
      vendor: string;
      softwareVersion: string;
      features?: string[];
      peers: string[];
    }[];
  };
  discoverDevices: { devices: AdapterDevice[]; consistencyGroups: { id: string; deviceIds: string[] }[] };
  queryReplicationSettings: {
    devices: {
      id: string;
      mode: 'async' | 'sync';
      direction: 'outgoing' | 'incoming';
      peer: PeerRef;
      pointsKept: number;
    }[];
  };
  syncOnce: { devices: { id: string; point: string; bytesSent: number }[] };
  querySyncStatus: {
    devices: {
      id: string;
      lastPoint: string | null;
      lastPointAt: string | null;
      peerLastPoint: string | null;
      inSync: boolean;
    }[];
  };
  testFailoverStart: { devices: { id: string; point: string; testDevice: { id: string; path: string | null } }[] };
  testFailoverStop: { devices: { id: string; removed: boolean }[] };
  prepareFailover: { devices: { id: string; point: string }[] };
  failover: { devices: { id: string; point: string; path: string | null }[] };
  prepareReverseReplication: { devices: { id: string; commonPoint: string }[] };
  reverseReplication: { devices: { id: string; peer: PeerRef; commonPoint: string }[] };
  restoreReplication: { devices: { id: string; point: string }[] };
}

/** What each command takes: {} for the queries, the array and its devices for the rest. */
export type AdapterArguments<C extends AdapterCommand> = C extends
  'queryInfo' | 'queryCapabilities' | 'queryConnectionParameters' | 'queryErrorDefinitions' | 'discoverArrays'
  ? Record<string, never>
  : C extends 'discoverDevices'
    ? { arrayId: string }
    : { arrayId: string; deviceIds: string[] };

// ---- JSON schemas (draft-07), checked with ajv on every response --------------------------------

const str = { type: 'string', minLength: 1, maxLength: 1024 } as const;
const nstr = { type: ['string', 'null'], maxLength: 1024 } as const;
const bool = { type: 'boolean' } as const;
const count = { type: 'integer', minimum: 0 } as const;
const obj = (properties: Record<string, unknown>, required = Object.keys(properties)): Record<string, unknown> => ({
  type: 'object',
  properties,
  required,
  additionalProperties: true,
});
const list = (items: unknown): Record<string, unknown> => ({ type: 'array', items, maxItems: 100000 });
const peer = obj({ arrayId: str, deviceId: str });
const perDevice = (more: Record<string, unknown>): Record<string, unknown> =>
  obj({ devices: list(obj({ id: str, ...more })) });

export const RESULT_SCHEMAS: Record<AdapterCommand, Record<string, unknown>> = {
  queryInfo: obj({
    name: str,
    vendor: str,
    version: str,
    protocolVersions: { type: 'array', items: { type: 'integer' }, minItems: 1 },
    description: { type: 'string' },
  }),
  queryCapabilities: obj({
    commands: list({ enum: [...ADAPTER_COMMANDS] }),
    features: obj({ testFailover: bool, reverseReplication: bool, consistencyGroups: bool }),
    deviceKinds: list({ enum: ['filesystem', 'volume'] }),
  }),
  queryConnectionParameters: obj({
    parameters: list(obj({ name: str, description: { type: 'string' }, required: bool, secret: bool })),
  }),
  queryErrorDefinitions: obj({
    errors: list(
      obj({ code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]{1,63}$' }, description: str, retryable: bool }),
    ),
  }),
  discoverArrays: obj({
    arrays: list(
      obj(
        { id: str, name: str, model: str, vendor: str, softwareVersion: str, features: list(str), peers: list(str) },
        ['id', 'name', 'model', 'vendor', 'softwareVersion', 'peers'],
      ),
    ),
  }),
  discoverDevices: obj({
    devices: list(
      obj({
        id: str,
        name: str,
        kind: { enum: ['filesystem', 'volume'] },
        sizeBytes: count,
        path: nstr,
        role: { enum: ['source', 'target', 'failedOver', 'unreplicated'] },
        peer: { oneOf: [{ type: 'null' }, peer] },
        consistencyGroup: nstr,
      }),
    ),
    consistencyGroups: list(obj({ id: str, deviceIds: list(str) })),
  }),
  queryReplicationSettings: perDevice({
    mode: { enum: ['async', 'sync'] },
    direction: { enum: ['outgoing', 'incoming'] },
    peer,
    pointsKept: count,
  }),
  syncOnce: perDevice({ point: str, bytesSent: count }),
  querySyncStatus: perDevice({ lastPoint: nstr, lastPointAt: nstr, peerLastPoint: nstr, inSync: bool }),
  testFailoverStart: perDevice({ point: str, testDevice: obj({ id: str, path: nstr }) }),
  testFailoverStop: perDevice({ removed: bool }),
  prepareFailover: perDevice({ point: str }),
  failover: perDevice({ point: str, path: nstr }),
  prepareReverseReplication: perDevice({ commonPoint: str }),
  reverseReplication: perDevice({ peer, commonPoint: str }),
  restoreReplication: perDevice({ point: str }),
};

export const RESPONSE_SCHEMA = {
  type: 'object',
  required: ['protocol'],
  properties: {
    protocol: { const: PROTOCOL_VERSION },
    result: {},
    error: obj(
      { code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]{1,63}$' }, message: str, details: { type: 'object' } },
      ['code', 'message'],
    ),
  },
  oneOf: [{ required: ['result'] }, { required: ['error'] }],
  additionalProperties: false,
} as const;

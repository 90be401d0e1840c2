/**
 * The slice of QEMU 7.2's QMP schema (qapi/*.json) that mamori uses, as types.
 * Only what we send and read is described; replies keep an index signature where
 * QEMU returns more than we look at. The schema is the authority: extend this file
 * (command, its arguments, its return) when mamori starts using another command.
 */

/** QMP 'RunState' (qapi/run-state.json). */
export type QmpRunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

/** QMP error classes (qapi/control.json 'QapiErrorClass'). Branch on these, never on `desc`. */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

export interface QmpGreeting {
  QMP: {
    version: QmpVersionInfo;
    capabilities: string[];
  };
}

export interface QmpVersionInfo {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

export interface QmpStatusInfo {
  running: boolean;
  singlestep?: boolean;
  status: QmpRunState;
}

export interface QmpMachineInfo {
  name: string;
  alias?: string;
  'is-default'?: boolean;
  'cpu-max': number;
  'hotpluggable-cpus': boolean;
  'numa-mem-supported': boolean;
  deprecated: boolean;
  'default-cpu-type'?: string;
  'default-ram-id'?: string;
}

export interface QmpBlockDeviceInfo {
  file: string;
  'node-name'?: string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  image: { filename: string; format: string; 'virtual-size': number; [key: string]: unknown };
  [key: string]: unknown;
}

export interface QmpBlockInfo {
  device: string;
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: QmpBlockDeviceInfo;
  tray_open?: boolean;
  'io-status'?: 'ok' | 'failed' | 'nospace';
}

/** A dirty bitmap named by node, as `block-dirty-bitmap-merge` and `block-export-add` accept. */
export type QmpBitmapRef = string | { node: string; name: string };

export interface QmpBitmapAddArgs {
  node: string;
  name: string;
  granularity?: number;
  persistent?: boolean;
  disabled?: boolean;
}

export interface QmpBitmapArgs {
  node: string;
  name: string;
}

export interface QmpBitmapMergeArgs {
  node: string;
  target: string;
  bitmaps: QmpBitmapRef[];
}

export interface QmpBlockdevSnapshotArgs {
  node: string;
  overlay: string;
}

export interface QmpBlockdevSnapshotSyncArgs {
  device?: string;
  'node-name'?: string;
  'snapshot-file': string;
  'snapshot-node-name'?: string;
  format?: string;
  mode?: 'existing' | 'absolute-paths';
}

/** `blockdev-add` options: a large union in the schema; mamori builds them elsewhere. */
export interface QmpBlockdevOptions {
  driver: string;
  'node-name'?: string;
  [key: string]: unknown;
}

export interface QmpDeviceAddArgs {
  driver: string;
  id?: string;
  bus?: string;
  [key: string]: unknown;
}

/** qapi/transaction.json 'TransactionAction', for the actions mamori uses plus a fallback. */
export type QmpTransactionAction =
  | { type: 'block-dirty-bitmap-add'; data: QmpBitmapAddArgs }
  | {
      type:
        | 'block-dirty-bitmap-remove'
        | 'block-dirty-bitmap-clear'
        | 'block-dirty-bitmap-enable'
        | 'block-dirty-bitmap-disable';
      data: QmpBitmapArgs;
    }
  | { type: 'block-dirty-bitmap-merge'; data: QmpBitmapMergeArgs }
  | { type: 'blockdev-snapshot'; data: QmpBlockdevSnapshotArgs }
  | { type: 'blockdev-snapshot-sync'; data: QmpBlockdevSnapshotSyncArgs }
  | {
      type: 'blockdev-backup';
      data: {
        device: string;
        target: string;
        sync: 'full' | 'top' | 'none' | 'incremental' | 'bitmap';
        'job-id'?: string;
        [key: string]: unknown;
      };
    }
  | { type: 'abort'; data: Record<string, never> };

export interface QmpTransactionArgs {
  actions: QmpTransactionAction[];
  properties?: { 'completion-mode'?: 'individual' | 'grouped' };
}

/** qapi/sockets.json 'SocketAddressLegacy', as `nbd-server-start` takes it. */
export type QmpSocketAddressLegacy =
  | { type: 'unix'; data: { path: string } }
  | { type: 'inet'; data: { host: string; port: string; ipv4?: boolean; ipv6?: boolean } }
  | { type: 'fd'; data: { str: string } };

export interface QmpNbdServerStartArgs {
  addr: QmpSocketAddressLegacy;
  'tls-creds'?: string;
  'tls-authz'?: string;
  'max-connections'?: number;
}

export interface QmpBlockExportAddArgs {
  type: 'nbd' | 'fuse' | 'vhost-user-blk' | 'vduse-blk';
  id: string;
  'node-name': string;
  writable?: boolean;
  writethrough?: boolean;
  name?: string;
  description?: string;
  bitmaps?: QmpBitmapRef[];
  'allocation-depth'?: boolean;
  [key: string]: unknown;
}

export type QmpJobStatus =
  | 'undefined'
  | 'created'
  | 'running'
  | 'paused'
  | 'ready'
  | 'standby'
  | 'waiting'
  | 'pending'
  | 'aborting'
  | 'concluded'
  | 'null';

export interface QmpBlockJobInfo {
  type: string;
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  speed: number;
  'io-status': 'ok' | 'failed' | 'nospace';
  ready: boolean;
  status: QmpJobStatus;
  'auto-finalize': boolean;
  'auto-dismiss': boolean;
  error?: string;
}

export interface QmpMigrateArgs {
  uri: string;
  blk?: boolean;
  inc?: boolean;
  detach?: boolean;
  resume?: boolean;
}

export interface QmpMigrateSetParametersArgs {
  'max-bandwidth'?: number;
  'downtime-limit'?: number;
  'tls-creds'?: string;
  'tls-hostname'?: string;
  'multifd-channels'?: number;
  [key: string]: unknown;
}

export type QmpMigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

export interface QmpMigrationInfo {
  status?: QmpMigrationStatus;
  ram?: { transferred: number; remaining: number; total: number; [key: string]: unknown };
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  [key: string]: unknown;
}

type NoArgs = undefined;
type Empty = Record<string, never>;

/**
 * Command name -> { args, ret }. `args: undefined` means the command takes none.
 * `execute()` is typed from this map; other commands go through its untyped fallback.
 */
export interface QmpCommands {
  qmp_capabilities: { args: { enable?: string[] } | NoArgs; ret: Empty };
  'query-status': { args: NoArgs; ret: QmpStatusInfo };
  'query-version': { args: NoArgs; ret: QmpVersionInfo };
  'query-machines': { args: NoArgs; ret: QmpMachineInfo[] };
  'query-kvm': { args: NoArgs; ret: { enabled: boolean; present: boolean } };
  'query-block': { args: NoArgs; ret: QmpBlockInfo[] };
  'query-name': { args: NoArgs; ret: { name?: string } };
  cont: { args: NoArgs; ret: Empty };
  stop: { args: NoArgs; ret: Empty };
  system_powerdown: { args: NoArgs; ret: Empty };
  system_reset: { args: NoArgs; ret: Empty };
  quit: { args: NoArgs; ret: Empty };
  'human-monitor-command': { args: { 'command-line': string; 'cpu-index'?: number }; ret: string };
  'blockdev-add': { args: QmpBlockdevOptions; ret: Empty };
  'blockdev-del': { args: { 'node-name': string }; ret: Empty };
  device_add: { args: QmpDeviceAddArgs; ret: Empty };
  device_del: { args: { id: string }; ret: Empty };
  'blockdev-snapshot': { args: QmpBlockdevSnapshotArgs; ret: Empty };
  'blockdev-snapshot-sync': { args: QmpBlockdevSnapshotSyncArgs; ret: Empty };
  'block-dirty-bitmap-add': { args: QmpBitmapAddArgs; ret: Empty };
  'block-dirty-bitmap-remove': { args: QmpBitmapArgs; ret: Empty };
  'block-dirty-bitmap-clear': { args: QmpBitmapArgs; ret: Empty };
  'block-dirty-bitmap-merge': { args: QmpBitmapMergeArgs; ret: Empty };
  transaction: { args: QmpTransactionArgs; ret: Empty };
  'nbd-server-start': { args: QmpNbdServerStartArgs; ret: Empty };
  'nbd-server-stop': { args: NoArgs; ret: Empty };
  'block-export-add': { args: QmpBlockExportAddArgs; ret: Empty };
  'block-export-del': { args: { id: string; mode?: 'safe' | 'hard' }; ret: Empty };
  'query-block-jobs': { args: NoArgs; ret: QmpBlockJobInfo[] };
  'blockdev-create': { args: { 'job-id': string; options: QmpBlockdevOptions }; ret: Empty };
  'query-jobs': { args: NoArgs; ret: { id: string; status: QmpJobStatus; error?: string }[] };
  'job-dismiss': { args: { id: string }; ret: Empty };
  'job-cancel': { args: { id: string }; ret: Empty };
  'query-named-block-nodes': { args: { flat?: boolean }; ret: { 'node-name': string }[] };
  'block-job-cancel': { args: { device: string; force?: boolean }; ret: Empty };
  migrate: { args: QmpMigrateArgs; ret: Empty };
  'migrate-set-capabilities': { args: { capabilities: { capability: string; state: boolean }[] }; ret: Empty };
  'migrate-set-parameters': { args: QmpMigrateSetParametersArgs; ret: Empty };
  'query-migrate': { args: NoArgs; ret: QmpMigrationInfo };
  'qom-get': { args: { path: string; property: string }; ret: unknown };
  'ringbuf-read': { args: { device: string; size: number; format?: 'utf8' | 'base64' }; ret: string };
}

export type QmpCommandName = keyof QmpCommands;
export type QmpArgs<C extends QmpCommandName> = QmpCommands[C]['args'];
export type QmpReturn<C extends QmpCommandName> = QmpCommands[C]['ret'];

export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

/** One asynchronous event as QEMU sent it; `data` is `{}` when QEMU sent none. */
export interface QmpEvent<D = Record<string, unknown>> {
  event: string;
  data: D;
  timestamp: QmpTimestamp;
}

/** Event name -> data, for the events mamori waits on. Others arrive as plain QmpEvent. */
export interface QmpEvents {
  SHUTDOWN: { guest: boolean; reason: string };
  RESET: { guest: boolean; reason: string };
  STOP: Empty;
  RESUME: Empty;
  POWERDOWN: Empty;
  GUEST_PANICKED: { action: string; [key: string]: unknown };
  WATCHDOG: { action: string };
  DEVICE_DELETED: { device?: string; path: string };
  BLOCK_IO_ERROR: {
    device: string;
    'node-name'?: string;
    operation: 'read' | 'write';
    action: string;
    nospace?: boolean;
    reason: string;
  };
  BLOCK_JOB_READY: { type: string; device: string; len: number; offset: number; speed: number };
  BLOCK_JOB_COMPLETED: { type: string; device: string; len: number; offset: number; speed: number; error?: string };
  BLOCK_JOB_CANCELLED: { type: string; device: string; len: number; offset: number; speed: number };
  BLOCK_JOB_ERROR: { device: string; operation: 'read' | 'write'; action: string };
  JOB_STATUS_CHANGE: { id: string; status: QmpJobStatus };
  BLOCK_EXPORT_DELETED: { id: string };
  MIGRATION: { status: QmpMigrationStatus };
  MIGRATION_PASS: { pass: number };
}

import type { ColumnType, Generated } from 'kysely';

/** Rows as SQLite holds them. JSON columns are TEXT; the repositories parse them. */
export interface MetaTable {
  key: string;
  value: string;
}

export interface TokenTable {
  id: string;
  name: string;
  /** sha256 of the token, hex: the token itself is never stored. */
  hash: string;
  role: string;
  /** Admin tokens: their pairing key (token-repo.ts pairingKeyOf), sealed with DATA/secret.key. */
  pairing_key: string | null;
  created_at: string;
  /** After this time (ISO) the token is refused; null: it does not expire. */
  expires_at: ColumnType<string | null, string | null | undefined, string | null>;
  /** When the token last authenticated a request (ISO), at most a minute stale. */
  last_used_at: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface VmTable {
  id: string;
  name: string;
  /** JSON of VmDefinition. */
  definition: string;
  state: string;
  state_reason: string | null;
  pid: number | null;
  last_heartbeat_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface DiskTable {
  id: string;
  name: string;
  pool: string;
  kind: string;
  format: string;
  path: string;
  size_bytes: number;
  rdm_mode: string | null;
  shared: ColumnType<number, number, number>;
  vm_id: string | null;
  /** 1 when the disk was made for its VM and goes with it on delete. */
  owned_by_vm: ColumnType<number, number, number>;
  created_at: string;
  /** JSON array of qcow2 overlay paths from external snapshots, oldest first. */
  overlays: ColumnType<string, string | undefined, string>;
}

export interface SnapshotTable {
  id: string;
  vm_id: string;
  name: string;
  created_at: string;
  /** 1 when taken from a running VM (crash-consistent across all its disks). */
  running: number;
}

export interface JobTable {
  id: string;
  kind: string;
  state: string;
  target: string | null;
  /** JSON: the journal of steps, each written before and after it runs. */
  steps: string;
  progress: number;
  result: string | null;
  error: string | null;
  /** JSON: what the kind's recovery rule needs to undo a step cut by a crash. */
  context: ColumnType<string | null, string | null | undefined, string | null>;
  /** The job kind's context version (jobs/job-kind.ts); null on rows from before versions. */
  context_version: ColumnType<number | null, number | null | undefined, number | null>;
  created_at: string;
  updated_at: string;
}

/**
 * An incident (a violated RPO, a failing replication): opened once, cleared when it ends;
 * a new incident of the same kind and target is a new row.
 */
export interface EventTable {
  id: string;
  kind: string;
  /** info | warning | critical */
  severity: string;
  /** What it is about, e.g. `vm:<id>`. */
  target: string;
  message: string;
  details: string | null;
  opened_at: string;
  cleared_at: string | null;
}

/** A protection group (recovery plans): a named set of replicated VMs. */
export interface ProtectionGroupTable {
  id: string;
  name: string;
  created_at: string;
  /** JSON ArrayBinding for an array-based group (its VMs are those on the devices); null: host-based. */
  array_binding: ColumnType<string | null, string | null | undefined, string | null>;
  /** JSON ArraySyncState: an array-based group's last syncs. */
  array_sync: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Membership: a VM is in at most one group (vm_id is unique). */
export interface ProtectionGroupVmTable {
  group_id: string;
  vm_id: string;
}

/** A paired site. A row exists once either side has paired (see src/sites/pairing-proof.ts). */
export interface PeerTable {
  id: string;
  name: string;
  /** The peer's API URL; null until this side has paired too (the peer paired with us first). */
  url: string | null;
  /** The peer's CA certificate, pinned: every call to the peer trusts this and nothing else. */
  ca_cert_pem: string;
  ca_fingerprint: string;
  /** The site-to-site token the peer issued to us (we must send it), sealed with DATA/secret.key (peer-repo.ts); null until we paired. */
  token: string | null;
  /** The id of the token we issued to the peer (tokens.id, role 'site'), revoked on unpair. */
  inbound_token_id: string | null;
  created_at: string;
  updated_at: string;
  /** Replication's bandwidth cap on the link to this peer, bits per second; null: none. */
  link_bits_per_second: ColumnType<number | null, number | null | undefined, number | null>;
  /** When the cap applies ('Mon-Fri 08:00-18:00,...', local time); null: always. */
  link_schedule: ColumnType<string | null, string | null | undefined, string | null>;
  /** Replication cycles in flight on the link at most; null: the default. */
  link_concurrency: ColumnType<number | null, number | null | undefined, number | null>;
}

/** Source side: a protected VM and where its replica lives. */
export interface ReplicationTable {
  vm_id: string;
  peer: string;
  replica_id: string;
  rpo_ms: number;
  keep_points: number;
  /** enabled | paused */
  state: string;
  /** Generation of the dirty bitmap that counts changes since the newest point. */
  generation: number | null;
  last_point_at: string | null;
  last_point_id: string | null;
  failures: number;
  last_error: string | null;
  /** JSON: the last few cycles' figures (bytes, duration, mode). */
  stats: string;
  /** JSON: the newest of `stats`, written with it (null: no cycle yet); what the status of all reads. */
  last_cycle: ColumnType<string | null, string | null | undefined, string | null>;
  /** Bytes per second the copy may use on the link; null: unlimited. */
  bandwidth_bps: ColumnType<number | null, number | null | undefined, number | null>;
  /** JSON: continuous replication's settings (ContinuousSettings); null: cycles only. */
  continuous: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: string;
  updated_at: string;
}

export interface ReplicaTable {
  id: string;
  source_site: string;
  source_vm_id: string;
  vm_name: string;
  disks: string;
  keep_points: number;
  created_at: string;
  /** Raised at each promotion of this replica (failover); the protected site learns it. */
  failover_generation: ColumnType<number, number | undefined, number>;
  /** When a planned or disaster recovery promoted it; replication into it stops. */
  promoted_at: ColumnType<string | null, string | null | undefined, string | null>;
  /** When the source last opened a cycle: its VM was up then (the data loss window's end). */
  last_contact_at: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface ReplicaPointTable {
  replica_id: string;
  point_id: string;
  time: string;
  consistency: string;
  committed_at: string;
  /** JSON: each disk chain's point id, in disk order. */
  disk_points: string;
}

/** A site network VMs attach to besides the built-in 'user' and 'none'. */
export interface NetworkTable {
  name: string;
  /** isolated: a bridge mamori makes with no uplink (test networks); bridge: an existing host bridge. */
  kind: string;
  bridge: string;
  created_at: string;
}

/** How a paired site's inventory (networks, pools) maps onto this site's, for recovery. */
export interface InventoryMappingTable {
  peer: string;
  /** network | pool */
  kind: string;
  source: string;
  target: string;
  /** For networks: the isolated network test recoveries use. */
  test_target: string | null;
  created_at: string;
}

export interface PlanTable {
  name: string;
  /** The protected site whose groups the plan recovers here. */
  peer: string;
  /** JSON of PlanSpec. */
  spec: string;
  /** The YAML it was applied from, if any. */
  source_text: string | null;
  /** JSON: the protected site's inventory when last seen (a disaster recovery runs from it). */
  inventory: string;
  created_at: string;
  updated_at: string;
}

export interface PlanRunTable {
  id: string;
  plan: string;
  mode: string;
  /** running | interrupted | waiting | succeeded | warnings | failed | cancelled */
  state: string;
  peer: string;
  /** JSON: the run's options (point, dry-run, ...). */
  options: string;
  /** JSON: the plan and the protected inventory as they were when the run started. */
  snapshot: string;
  /** JSON: the journal of steps, each written before and after it runs. */
  steps: string;
  /** JSON: per-VM outcome (recovered VM, point, RTO, data loss window). */
  vms: string;
  /** JSON: per array-based group, the paths of its devices' test copies or failed-over devices. */
  arrays: ColumnType<string, string | undefined, string>;
  result: string | null;
  error: string | null;
  started_at: string;
  ended_at: string | null;
  updated_at: string;
}

/** A replica point in use by recovered VMs: retention keeps the replica's points while held. */
export interface ReplicaHoldTable {
  replica_id: string;
  holder: string;
  point_id: string;
  created_at: string;
}

/** A VM a plan run made from a replica (test VMs are removed by cleanup). */
export interface RecoveredVmTable {
  vm_id: string;
  run_id: string;
  mode: string;
  replica_id: string;
  point_id: string;
  source_vm_id: string;
  created_at: string;
}

/** A protected VM whose replica was promoted at the peer: it stays off unless forced. */
export interface SupersededVmTable {
  vm_id: string;
  generation: number;
  by_site: string;
  reason: string;
  at: string;
}

/** A VM made for an incoming live migration, not yet activated (no foreign key: the row outlives a half-made VM). */
export interface IncomingMigrationTable {
  vm_id: string;
  source_site: string;
  created_at: string;
}

/** A desktop pool: its spec (JSON, pool-spec.ts) and where its last operation left it. */
export interface DesktopPoolTable {
  name: string;
  spec: string;
  state: string;
  message: string | null;
  /** The operation under way or cut (JSON PoolOperation); null once it ended well. */
  operation: string | null;
  created_at: string;
  updated_at: string;
}

/** A master snapshot flattened into read-only images in one storage pool; files: JSON array, one per master disk. */
export interface PoolReplicaTable {
  id: string;
  pool: string;
  storage: string;
  snapshot: string;
  files: string;
  size_bytes: number;
  created_at: string;
}

/** A desktop of a pool: the VM, its number in the name pattern, the replica its clones sit on. */
export interface PoolDesktopTable {
  vm_id: string;
  pool: string;
  number: number;
  replica_id: string;
  state: string;
  message: string | null;
  /** The operation kind that still has to do this desktop (refresh, recompose), else null. */
  pending: string | null;
  /** The user the desktop is assigned to; null: free, so it counts as a spare while powered on. */
  assigned_user: string | null;
  /** The user with a session on the desktop (reported by a broker), and since when; null: none. */
  session_user: string | null;
  session_since: string | null;
  created_at: string;
  updated_at: string;
}

/** A static address of a pool's range held by one desktop (reserved before its seed is written). */
export interface PoolAddressTable {
  address: string;
  pool: string;
  /** The desktop's VM id; its VM row may not exist yet while provisioning builds it. */
  vm_id: string;
  reserved_at: string;
}

/** A storage adapter with its connection: the arrays it discovers are this site's. */
export interface StorageArrayTable {
  name: string;
  adapter: string;
  /** JSON object of the connection parameters' values. */
  connection: string;
  created_at: string;
}

/**
 * One webhook notification of an incident's transition (firing when it opened, resolved when
 * it cleared). skipped: the transition happened before a webhook was configured.
 */
export interface AlertDeliveryTable {
  incident_id: string;
  /** firing | resolved */
  status: string;
  /** pending | delivered | failed (the receiver refused it for good) | skipped */
  state: string;
  attempts: ColumnType<number, number | undefined, number>;
  last_error: string | null;
  /** When the next try may start (backoff after a failure). */
  next_attempt_at: string;
  created_at: string;
  delivered_at: string | null;
}

/**
 * One audited API call (src/audit/audit-log.ts): append-only, each row chained to the one
 * before by prev_hash; hash covers every other column.
 */
export interface AuditLogTable {
  seq: number;
  at: string;
  token_id: string | null;
  role: string | null;
  /** The caller's address as the server saw it. */
  source: string;
  method: string;
  /** The route's pattern (/vms/:name/start), never the URL. */
  route: string;
  /** JSON object of the route's parameters (each value truncated), or null. */
  target: string | null;
  status: number;
  error_code: string | null;
  request_id: string | null;
  prev_hash: string;
  hash: string;
}

export interface Database {
  meta: MetaTable;
  tokens: TokenTable;
  vms: VmTable;
  disks: DiskTable;
  jobs: JobTable;
  snapshots: SnapshotTable;
  peers: PeerTable;
  replications: ReplicationTable;
  replicas: ReplicaTable;
  replica_points: ReplicaPointTable;
  events: EventTable;
  protection_groups: ProtectionGroupTable;
  protection_group_vms: ProtectionGroupVmTable;
  networks: NetworkTable;
  inventory_mappings: InventoryMappingTable;
  plans: PlanTable;
  plan_runs: PlanRunTable;
  replica_holds: ReplicaHoldTable;
  recovered_vms: RecoveredVmTable;
  superseded_vms: SupersededVmTable;
  incoming_migrations: IncomingMigrationTable;
  desktop_pools: DesktopPoolTable;
  pool_replicas: PoolReplicaTable;
  pool_desktops: PoolDesktopTable;
  pool_addresses: PoolAddressTable;
  storage_arrays: StorageArrayTable;
  alert_deliveries: AlertDeliveryTable;
  audit_log: AuditLogTable;
  schema_version: { version: Generated<number> };
}

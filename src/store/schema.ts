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
  created_at: string;
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
  created_at: string;
  updated_at: string;
}

export interface Database {
  meta: MetaTable;
  tokens: TokenTable;
  vms: VmTable;
  disks: DiskTable;
  jobs: JobTable;
  snapshots: SnapshotTable;
  schema_version: { version: Generated<number> };
}

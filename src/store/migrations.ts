import type { StoreDialect } from './store.js';

/**
 * What differs between the dialects in the schema, said once. Everything else in a step is
 * SQL both SQLite and PostgreSQL read the same way (TEXT, PRIMARY KEY, REFERENCES ... ON
 * DELETE, UNIQUE, CREATE INDEX, ALTER TABLE ... ADD COLUMN ... DEFAULT).
 */
export interface MigrationDialect {
  name: StoreDialect;
  /** Whole numbers (ids, counts, byte sizes, 0/1 flags): SQLite's INTEGER is 64-bit, PostgreSQL's 32-bit, so BIGINT there. */
  int: string;
  /** Fractions: SQLite's REAL is 8 bytes, PostgreSQL's 4, so DOUBLE PRECISION there. */
  real: string;
  /** Statements that refuse UPDATE and DELETE on a table (SQLite: RAISE in a trigger; PostgreSQL: a trigger function). */
  appendOnly(table: string): string;
  /** A column name that is a reserved word in one dialect (PostgreSQL's session_user), quoted where it must be. */
  column(name: string): string;
}

export const SQLITE_MIGRATION_DIALECT: MigrationDialect = {
  name: 'sqlite',
  int: 'INTEGER',
  real: 'REAL',
  column: (name) => name,
  appendOnly: (t) =>
    `CREATE TRIGGER ${t}_no_update BEFORE UPDATE ON ${t} BEGIN SELECT RAISE(ABORT, '${t} is append-only'); END;
   CREATE TRIGGER ${t}_no_delete BEFORE DELETE ON ${t} BEGIN SELECT RAISE(ABORT, '${t} is append-only'); END;`,
};

export const POSTGRES_MIGRATION_DIALECT: MigrationDialect = {
  name: 'postgres',
  int: 'BIGINT',
  real: 'DOUBLE PRECISION',
  column: (name) => `"${name}"`,
  // TRUNCATE skips row triggers: a statement trigger refuses it too.
  appendOnly: (t) =>
    `CREATE FUNCTION ${t}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '${t} is append-only'; END $$;
   CREATE TRIGGER ${t}_no_update BEFORE UPDATE ON ${t} FOR EACH ROW EXECUTE FUNCTION ${t}_append_only();
   CREATE TRIGGER ${t}_no_delete BEFORE DELETE ON ${t} FOR EACH ROW EXECUTE FUNCTION ${t}_append_only();
   CREATE TRIGGER ${t}_no_truncate BEFORE TRUNCATE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${t}_append_only();`,
};

/** One schema step: its SQL (one or more statements) for a dialect. */
export type Migration = (d: MigrationDialect) => string;

/**
 * The ordered schema steps, one set for both dialects. Each runs once, in a transaction with
 * the version bump (schema_version), so a crash mid-migration leaves the previous version
 * intact. Never edit or reorder an applied step: databases in the field have run it; add one.
 * On SQLite each step renders to the very text it had before PostgreSQL support
 * (test/unit/store/migrations.test.ts checks the schema against one made by that code).
 */
export const MIGRATIONS: readonly Migration[] = [
  (d) => `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
     role TEXT NOT NULL, created_at TEXT NOT NULL);
   CREATE TABLE vms (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, definition TEXT NOT NULL,
     state TEXT NOT NULL, state_reason TEXT, pid ${d.int}, last_heartbeat_at TEXT,
     created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
   CREATE TABLE disks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, pool TEXT NOT NULL,
     kind TEXT NOT NULL, format TEXT NOT NULL, path TEXT NOT NULL, size_bytes ${d.int} NOT NULL,
     rdm_mode TEXT, shared ${d.int} NOT NULL DEFAULT 0,
     vm_id TEXT REFERENCES vms(id) ON DELETE SET NULL, owned_by_vm ${d.int} NOT NULL DEFAULT 0,
     created_at TEXT NOT NULL);
   CREATE INDEX disks_vm ON disks(vm_id);
   CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, target TEXT,
     steps TEXT NOT NULL, progress ${d.real} NOT NULL DEFAULT 0, result TEXT, error TEXT,
     created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
   CREATE INDEX jobs_state ON jobs(state);`,
  // External snapshots: a disk's qcow2 overlays, oldest first; the last is the active layer.
  (d) => `ALTER TABLE disks ADD COLUMN overlays TEXT NOT NULL DEFAULT '[]';
   CREATE TABLE snapshots (id TEXT PRIMARY KEY, vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
     name TEXT NOT NULL, created_at TEXT NOT NULL, running ${d.int} NOT NULL, UNIQUE (vm_id, name));`,
  // Paired sites: each pins its peer's CA; tokens gain the role 'site' for site-to-site calls.
  () => `CREATE TABLE peers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, url TEXT,
     ca_cert_pem TEXT NOT NULL, ca_fingerprint TEXT NOT NULL UNIQUE, token TEXT,
     inbound_token_id TEXT REFERENCES tokens(id) ON DELETE SET NULL,
     created_at TEXT NOT NULL, updated_at TEXT NOT NULL);`,
  // Replication. Source side: one row per protected VM. Recovery side: replicas and their
  // points; a replica_points row is the commit of a point across all of a VM's disks.
  (d) => `CREATE TABLE replications (vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     peer TEXT NOT NULL, replica_id TEXT NOT NULL, rpo_ms ${d.int} NOT NULL, keep_points ${d.int} NOT NULL,
     state TEXT NOT NULL, generation ${d.int}, last_point_at TEXT, last_point_id TEXT, failures ${d.int} NOT NULL DEFAULT 0,
     last_error TEXT, stats TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
   CREATE TABLE replicas (id TEXT PRIMARY KEY, source_site TEXT NOT NULL, source_vm_id TEXT NOT NULL,
     vm_name TEXT NOT NULL, disks TEXT NOT NULL, keep_points ${d.int} NOT NULL, created_at TEXT NOT NULL,
     UNIQUE (source_site, source_vm_id));
   CREATE TABLE replica_points (replica_id TEXT NOT NULL REFERENCES replicas(id) ON DELETE CASCADE,
     point_id TEXT NOT NULL, time TEXT NOT NULL, consistency TEXT NOT NULL, committed_at TEXT NOT NULL,
     disk_points TEXT NOT NULL, PRIMARY KEY (replica_id, point_id));`,
  // Replication network throttling (bytes per second; null: unlimited), as vSphere's.
  (d) => `ALTER TABLE replications ADD COLUMN bandwidth_bps ${d.int};`,
  // A job's recovery context (what its recovery rule needs to undo a cut step), and events:
  // incidents such as a violated RPO, open until cleared, one row per incident.
  () => `ALTER TABLE jobs ADD COLUMN context TEXT;
   CREATE INDEX jobs_kind_target ON jobs(kind, target);
   CREATE TABLE events (id TEXT PRIMARY KEY, kind TEXT NOT NULL, severity TEXT NOT NULL, target TEXT NOT NULL,
     message TEXT NOT NULL, details TEXT, opened_at TEXT NOT NULL, cleared_at TEXT);
   CREATE INDEX events_open ON events(kind, target, cleared_at);`,
  // Protection groups (recovery plans): named sets of replicated VMs, a VM in at most one.
  () => `CREATE TABLE protection_groups (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
   CREATE TABLE protection_group_vms (group_id TEXT NOT NULL REFERENCES protection_groups(id) ON DELETE CASCADE,
     vm_id TEXT NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE, PRIMARY KEY (group_id, vm_id));`,
  // Recovery plans: site networks (isolated test networks are bridges mamori makes), inventory
  // mappings from a peer's networks and pools to this site's, plans, their runs with a journal
  // of steps, holds that keep a replica's points while recovered VMs read them, and the VMs a
  // run made. Replicas and protected VMs carry the failover generation (split-brain safety).
  (d) => `CREATE TABLE networks (name TEXT PRIMARY KEY, kind TEXT NOT NULL, bridge TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
   CREATE TABLE inventory_mappings (peer TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
     test_target TEXT, created_at TEXT NOT NULL, PRIMARY KEY (peer, kind, source));
   CREATE TABLE plans (name TEXT PRIMARY KEY, peer TEXT NOT NULL, spec TEXT NOT NULL, source_text TEXT, inventory TEXT NOT NULL,
     created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
   CREATE TABLE plan_runs (id TEXT PRIMARY KEY, plan TEXT NOT NULL, mode TEXT NOT NULL, state TEXT NOT NULL,
     peer TEXT NOT NULL, options TEXT NOT NULL, snapshot TEXT NOT NULL, steps TEXT NOT NULL, vms TEXT NOT NULL DEFAULT '{}',
     result TEXT, error TEXT, started_at TEXT NOT NULL, ended_at TEXT, updated_at TEXT NOT NULL);
   CREATE INDEX plan_runs_plan ON plan_runs(plan, started_at);
   CREATE TABLE replica_holds (replica_id TEXT NOT NULL REFERENCES replicas(id) ON DELETE CASCADE, holder TEXT NOT NULL,
     point_id TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (replica_id, holder));
   CREATE TABLE recovered_vms (vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, run_id TEXT NOT NULL,
     mode TEXT NOT NULL, replica_id TEXT NOT NULL, point_id TEXT NOT NULL, source_vm_id TEXT NOT NULL, created_at TEXT NOT NULL);
   ALTER TABLE replicas ADD COLUMN failover_generation ${d.int} NOT NULL DEFAULT 0;
   ALTER TABLE replicas ADD COLUMN promoted_at TEXT;
   ALTER TABLE replicas ADD COLUMN last_contact_at TEXT;
   CREATE TABLE superseded_vms (vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, generation ${d.int} NOT NULL,
     by_site TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);`,
  // Live migration: a VM made here for an incoming migration, until it is activated; a server
  // that dies before then removes it at its next start.
  () => `CREATE TABLE incoming_migrations (vm_id TEXT PRIMARY KEY, source_site TEXT NOT NULL, created_at TEXT NOT NULL);`,
  // Desktop pools (View Composer): a pool's spec, its replicas (a master snapshot flattened,
  // one per storage pool and snapshot), and its desktops, each a VM of linked clones.
  (d) => `CREATE TABLE desktop_pools (name TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, message TEXT,
     created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
   CREATE TABLE pool_replicas (id TEXT PRIMARY KEY, pool TEXT NOT NULL REFERENCES desktop_pools(name) ON DELETE CASCADE,
     storage TEXT NOT NULL, snapshot TEXT NOT NULL, files TEXT NOT NULL, size_bytes ${d.int} NOT NULL, created_at TEXT NOT NULL,
     UNIQUE (pool, storage, snapshot));
   CREATE TABLE pool_desktops (vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     pool TEXT NOT NULL REFERENCES desktop_pools(name) ON DELETE CASCADE, number ${d.int} NOT NULL, replica_id TEXT NOT NULL,
     state TEXT NOT NULL, message TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (pool, number));`,
  // A pool operation is recorded before it starts, and each desktop it still has to do is
  // marked, so a server stopped mid-way resumes it where it stopped, not from the beginning.
  () => `ALTER TABLE desktop_pools ADD COLUMN operation TEXT;
   ALTER TABLE pool_desktops ADD COLUMN pending TEXT;`,
  // The user a desktop is assigned to (a dedicated desktop): spare desktops are the unassigned ones.
  () => `ALTER TABLE pool_desktops ADD COLUMN assigned_user TEXT;`,
  // Storage arrays this site reaches through an adapter (array-based replication): the
  // adapter (a bundled name or a path) and its connection values, secrets included.
  () => `CREATE TABLE storage_arrays (name TEXT PRIMARY KEY, adapter TEXT NOT NULL, connection TEXT NOT NULL, created_at TEXT NOT NULL);`,
  // Array-based protection groups: a group bound to replicated devices of an array (JSON:
  // the array entry, array, devices, the peer site, whether compatibility was forced); and
  // the array state a plan run keeps (test copies' and failed-over devices' paths).
  () => `ALTER TABLE protection_groups ADD COLUMN array_binding TEXT;
   ALTER TABLE plan_runs ADD COLUMN arrays TEXT NOT NULL DEFAULT '{}';`,
  // The state of an array-based group's syncs on its RPO (JSON: last point, bytes, failures).
  () => `ALTER TABLE protection_groups ADD COLUMN array_sync TEXT;`,
  // Alert webhook deliveries: one row per incident transition (firing, resolved), written
  // before the POST and marked after it, so a restart neither loses nor repeats one.
  (d) => `CREATE TABLE alert_deliveries (incident_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
     status TEXT NOT NULL, state TEXT NOT NULL, attempts ${d.int} NOT NULL DEFAULT 0, last_error TEXT,
     next_attempt_at TEXT NOT NULL, created_at TEXT NOT NULL, delivered_at TEXT, PRIMARY KEY (incident_id, status));
   CREATE INDEX alert_deliveries_state ON alert_deliveries(state, next_attempt_at);`,
  // Least privilege: tokens get an expiry and the time of their last use; the old 'user'
  // role (never issued) becomes 'operator', so no row keeps a role the API does not know.
  () => `ALTER TABLE tokens ADD COLUMN expires_at TEXT;
   ALTER TABLE tokens ADD COLUMN last_used_at TEXT;
   UPDATE tokens SET role = 'operator' WHERE role = 'user';`,
  // Secrets at rest: an admin token's pairing key, sealed with DATA/secret.key (the stored
  // hash was the key before, so the database alone let anyone pair). Values in clear in
  // peers.token, storage_arrays.connection and the webhook URL are sealed at start (main.ts).
  () => `ALTER TABLE tokens ADD COLUMN pairing_key TEXT;`,
  // The audit log: one row per state-changing or refused API call, hash-chained (src/audit/audit-log.ts);
  // its head is kept in meta ('audit.head') so removing the newest rows shows too. The triggers
  // stop the code (not someone holding the file) from editing it: the chain catches the rest.
  (d) => `CREATE TABLE audit_log (seq ${d.int} PRIMARY KEY, at TEXT NOT NULL, token_id TEXT, role TEXT, source TEXT NOT NULL,
     method TEXT NOT NULL, route TEXT NOT NULL, target TEXT, status ${d.int} NOT NULL, error_code TEXT, request_id TEXT,
     prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
   CREATE INDEX audit_log_at ON audit_log(at);
   CREATE INDEX audit_log_token ON audit_log(token_id, seq);
   ${d.appendOnly('audit_log')}`,
  // Desktop pools: a desktop is in use when assigned to a user or with a session (a broker
  // reports sessions); static addresses are reserved one row each, the address the key, so
  // two desktops never hold one address, whichever pools and whatever runs at once.
  (d) => `ALTER TABLE pool_desktops ADD COLUMN ${d.column('session_user')} TEXT;
   ALTER TABLE pool_desktops ADD COLUMN session_since TEXT;
   CREATE TABLE pool_addresses (address TEXT PRIMARY KEY, pool TEXT NOT NULL REFERENCES desktop_pools(name) ON DELETE CASCADE,
     vm_id TEXT NOT NULL UNIQUE, reserved_at TEXT NOT NULL);`,
];

/** The steps' SQL for a dialect, in order. */
export function migrationSql(d: MigrationDialect): string[] {
  return MIGRATIONS.map((m) => m(d));
}

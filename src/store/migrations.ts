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
  /**
   * Text: compared and sorted bytewise, as SQLite does, whatever locale the PostgreSQL database
   * was made with (ORDER BY name, and ISO timestamps, must agree on both).
   */
  text: string;
  /** Statements that refuse UPDATE and DELETE on a table (SQLite: RAISE in a trigger; PostgreSQL: a trigger function). */
  appendOnly(table: string): string;
  /** A column name that is a reserved word in one dialect (PostgreSQL's session_user), quoted where it must be. */
  column(name: string): string;
}

export const SQLITE_MIGRATION_DIALECT: MigrationDialect = {
  name: 'sqlite',
  int: 'INTEGER',
  real: 'REAL',
  text: 'TEXT',
  column: (name) => name,
  appendOnly: (t) =>
    `CREATE TRIGGER ${t}_no_update BEFORE UPDATE ON ${t} BEGIN SELECT RAISE(ABORT, '${t} is append-only'); END;
   CREATE TRIGGER ${t}_no_delete BEFORE DELETE ON ${t} BEGIN SELECT RAISE(ABORT, '${t} is append-only'); END;`,
};

export const POSTGRES_MIGRATION_DIALECT: MigrationDialect = {
  name: 'postgres',
  int: 'BIGINT',
  real: 'DOUBLE PRECISION',
  text: 'TEXT COLLATE "C"',
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
  (d) => `CREATE TABLE meta (key ${d.text} PRIMARY KEY, value ${d.text} NOT NULL);
   CREATE TABLE tokens (id ${d.text} PRIMARY KEY, name ${d.text} NOT NULL, hash ${d.text} NOT NULL UNIQUE,
     role ${d.text} NOT NULL, created_at ${d.text} NOT NULL);
   CREATE TABLE vms (id ${d.text} PRIMARY KEY, name ${d.text} NOT NULL UNIQUE, definition ${d.text} NOT NULL,
     state ${d.text} NOT NULL, state_reason ${d.text}, pid ${d.int}, last_heartbeat_at ${d.text},
     created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL);
   CREATE TABLE disks (id ${d.text} PRIMARY KEY, name ${d.text} NOT NULL UNIQUE, pool ${d.text} NOT NULL,
     kind ${d.text} NOT NULL, format ${d.text} NOT NULL, path ${d.text} NOT NULL, size_bytes ${d.int} NOT NULL,
     rdm_mode ${d.text}, shared ${d.int} NOT NULL DEFAULT 0,
     vm_id ${d.text} REFERENCES vms(id) ON DELETE SET NULL, owned_by_vm ${d.int} NOT NULL DEFAULT 0,
     created_at ${d.text} NOT NULL);
   CREATE INDEX disks_vm ON disks(vm_id);
   CREATE TABLE jobs (id ${d.text} PRIMARY KEY, kind ${d.text} NOT NULL, state ${d.text} NOT NULL, target ${d.text},
     steps ${d.text} NOT NULL, progress ${d.real} NOT NULL DEFAULT 0, result ${d.text}, error ${d.text},
     created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL);
   CREATE INDEX jobs_state ON jobs(state);`,
  // External snapshots: a disk's qcow2 overlays, oldest first; the last is the active layer.
  (d) => `ALTER TABLE disks ADD COLUMN overlays ${d.text} NOT NULL DEFAULT '[]';
   CREATE TABLE snapshots (id ${d.text} PRIMARY KEY, vm_id ${d.text} NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
     name ${d.text} NOT NULL, created_at ${d.text} NOT NULL, running ${d.int} NOT NULL, UNIQUE (vm_id, name));`,
  // Paired sites: each pins its peer's CA; tokens gain the role 'site' for site-to-site calls.
  (d) => `CREATE TABLE peers (id ${d.text} PRIMARY KEY, name ${d.text} NOT NULL UNIQUE, url ${d.text},
     ca_cert_pem ${d.text} NOT NULL, ca_fingerprint ${d.text} NOT NULL UNIQUE, token ${d.text},
     inbound_token_id ${d.text} REFERENCES tokens(id) ON DELETE SET NULL,
     created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL);`,
  // Replication. Source side: one row per protected VM. Recovery side: replicas and their
  // points; a replica_points row is the commit of a point across all of a VM's disks.
  (d) => `CREATE TABLE replications (vm_id ${d.text} PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     peer ${d.text} NOT NULL, replica_id ${d.text} NOT NULL, rpo_ms ${d.int} NOT NULL, keep_points ${d.int} NOT NULL,
     state ${d.text} NOT NULL, generation ${d.int}, last_point_at ${d.text}, last_point_id ${d.text}, failures ${d.int} NOT NULL DEFAULT 0,
     last_error ${d.text}, stats ${d.text} NOT NULL DEFAULT '[]', created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL);
   CREATE TABLE replicas (id ${d.text} PRIMARY KEY, source_site ${d.text} NOT NULL, source_vm_id ${d.text} NOT NULL,
     vm_name ${d.text} NOT NULL, disks ${d.text} NOT NULL, keep_points ${d.int} NOT NULL, created_at ${d.text} NOT NULL,
     UNIQUE (source_site, source_vm_id));
   CREATE TABLE replica_points (replica_id ${d.text} NOT NULL REFERENCES replicas(id) ON DELETE CASCADE,
     point_id ${d.text} NOT NULL, time ${d.text} NOT NULL, consistency ${d.text} NOT NULL, committed_at ${d.text} NOT NULL,
     disk_points ${d.text} NOT NULL, PRIMARY KEY (replica_id, point_id));`,
  // Replication network throttling (bytes per second; null: unlimited), as vSphere's.
  (d) => `ALTER TABLE replications ADD COLUMN bandwidth_bps ${d.int};`,
  // A job's recovery context (what its recovery rule needs to undo a cut step), and events:
  // incidents such as a violated RPO, open until cleared, one row per incident.
  (d) => `ALTER TABLE jobs ADD COLUMN context ${d.text};
   CREATE INDEX jobs_kind_target ON jobs(kind, target);
   CREATE TABLE events (id ${d.text} PRIMARY KEY, kind ${d.text} NOT NULL, severity ${d.text} NOT NULL, target ${d.text} NOT NULL,
     message ${d.text} NOT NULL, details ${d.text}, opened_at ${d.text} NOT NULL, cleared_at ${d.text});
   CREATE INDEX events_open ON events(kind, target, cleared_at);`,
  // Protection groups (recovery plans): named sets of replicated VMs, a VM in at most one.
  (
    d,
  ) => `CREATE TABLE protection_groups (id ${d.text} PRIMARY KEY, name ${d.text} NOT NULL UNIQUE, created_at ${d.text} NOT NULL);
   CREATE TABLE protection_group_vms (group_id ${d.text} NOT NULL REFERENCES protection_groups(id) ON DELETE CASCADE,
     vm_id ${d.text} NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE, PRIMARY KEY (group_id, vm_id));`,
  // Recovery plans: site networks (isolated test networks are bridges mamori makes), inventory
  // mappings from a peer's networks and pools to this site's, plans, their runs with a journal
  // of steps, holds that keep a replica's points while recovered VMs read them, and the VMs a
  // run made. Replicas and protected VMs carry the failover generation (split-brain safety).
  (
    d,
  ) => `CREATE TABLE networks (name ${d.text} PRIMARY KEY, kind ${d.text} NOT NULL, bridge ${d.text} NOT NULL UNIQUE, created_at ${d.text} NOT NULL);
   CREATE TABLE inventory_mappings (peer ${d.text} NOT NULL, kind ${d.text} NOT NULL, source ${d.text} NOT NULL, target ${d.text} NOT NULL,
     test_target ${d.text}, created_at ${d.text} NOT NULL, PRIMARY KEY (peer, kind, source));
   CREATE TABLE plans (name ${d.text} PRIMARY KEY, peer ${d.text} NOT NULL, spec ${d.text} NOT NULL, source_text ${d.text}, inventory ${d.text} NOT NULL,
     created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL);
   CREATE TABLE plan_runs (id ${d.text} PRIMARY KEY, plan ${d.text} NOT NULL, mode ${d.text} NOT NULL, state ${d.text} NOT NULL,
     peer ${d.text} NOT NULL, options ${d.text} NOT NULL, snapshot ${d.text} NOT NULL, steps ${d.text} NOT NULL, vms ${d.text} NOT NULL DEFAULT '{}',
     result ${d.text}, error ${d.text}, started_at ${d.text} NOT NULL, ended_at ${d.text}, updated_at ${d.text} NOT NULL);
   CREATE INDEX plan_runs_plan ON plan_runs(plan, started_at);
   CREATE TABLE replica_holds (replica_id ${d.text} NOT NULL REFERENCES replicas(id) ON DELETE CASCADE, holder ${d.text} NOT NULL,
     point_id ${d.text} NOT NULL, created_at ${d.text} NOT NULL, PRIMARY KEY (replica_id, holder));
   CREATE TABLE recovered_vms (vm_id ${d.text} PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, run_id ${d.text} NOT NULL,
     mode ${d.text} NOT NULL, replica_id ${d.text} NOT NULL, point_id ${d.text} NOT NULL, source_vm_id ${d.text} NOT NULL, created_at ${d.text} NOT NULL);
   ALTER TABLE replicas ADD COLUMN failover_generation ${d.int} NOT NULL DEFAULT 0;
   ALTER TABLE replicas ADD COLUMN promoted_at ${d.text};
   ALTER TABLE replicas ADD COLUMN last_contact_at ${d.text};
   CREATE TABLE superseded_vms (vm_id ${d.text} PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, generation ${d.int} NOT NULL,
     by_site ${d.text} NOT NULL, reason ${d.text} NOT NULL, at ${d.text} NOT NULL);`,
  // Live migration: a VM made here for an incoming migration, until it is activated; a server
  // that dies before then removes it at its next start.
  (d) =>
    `CREATE TABLE incoming_migrations (vm_id ${d.text} PRIMARY KEY, source_site ${d.text} NOT NULL, created_at ${d.text} NOT NULL);`,
  // Desktop pools (View Composer): a pool's spec, its replicas (a master snapshot flattened,
  // one per storage pool and snapshot), and its desktops, each a VM of linked clones.
  (
    d,
  ) => `CREATE TABLE desktop_pools (name ${d.text} PRIMARY KEY, spec ${d.text} NOT NULL, state ${d.text} NOT NULL, message ${d.text},
     created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL);
   CREATE TABLE pool_replicas (id ${d.text} PRIMARY KEY, pool ${d.text} NOT NULL REFERENCES desktop_pools(name) ON DELETE CASCADE,
     storage ${d.text} NOT NULL, snapshot ${d.text} NOT NULL, files ${d.text} NOT NULL, size_bytes ${d.int} NOT NULL, created_at ${d.text} NOT NULL,
     UNIQUE (pool, storage, snapshot));
   CREATE TABLE pool_desktops (vm_id ${d.text} PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     pool ${d.text} NOT NULL REFERENCES desktop_pools(name) ON DELETE CASCADE, number ${d.int} NOT NULL, replica_id ${d.text} NOT NULL,
     state ${d.text} NOT NULL, message ${d.text}, created_at ${d.text} NOT NULL, updated_at ${d.text} NOT NULL, UNIQUE (pool, number));`,
  // A pool operation is recorded before it starts, and each desktop it still has to do is
  // marked, so a server stopped mid-way resumes it where it stopped, not from the beginning.
  (d) => `ALTER TABLE desktop_pools ADD COLUMN operation ${d.text};
   ALTER TABLE pool_desktops ADD COLUMN pending ${d.text};`,
  // The user a desktop is assigned to (a dedicated desktop): spare desktops are the unassigned ones.
  (d) => `ALTER TABLE pool_desktops ADD COLUMN assigned_user ${d.text};`,
  // Storage arrays this site reaches through an adapter (array-based replication): the
  // adapter (a bundled name or a path) and its connection values, secrets included.
  (d) =>
    `CREATE TABLE storage_arrays (name ${d.text} PRIMARY KEY, adapter ${d.text} NOT NULL, connection ${d.text} NOT NULL, created_at ${d.text} NOT NULL);`,
  // Array-based protection groups: a group bound to replicated devices of an array (JSON:
  // the array entry, array, devices, the peer site, whether compatibility was forced); and
  // the array state a plan run keeps (test copies' and failed-over devices' paths).
  (d) => `ALTER TABLE protection_groups ADD COLUMN array_binding ${d.text};
   ALTER TABLE plan_runs ADD COLUMN arrays ${d.text} NOT NULL DEFAULT '{}';`,
  // The state of an array-based group's syncs on its RPO (JSON: last point, bytes, failures).
  (d) => `ALTER TABLE protection_groups ADD COLUMN array_sync ${d.text};`,
  // Alert webhook deliveries: one row per incident transition (firing, resolved), written
  // before the POST and marked after it, so a restart neither loses nor repeats one.
  (d) => `CREATE TABLE alert_deliveries (incident_id ${d.text} NOT NULL REFERENCES events(id) ON DELETE CASCADE,
     status ${d.text} NOT NULL, state ${d.text} NOT NULL, attempts ${d.int} NOT NULL DEFAULT 0, last_error ${d.text},
     next_attempt_at ${d.text} NOT NULL, created_at ${d.text} NOT NULL, delivered_at ${d.text}, PRIMARY KEY (incident_id, status));
   CREATE INDEX alert_deliveries_state ON alert_deliveries(state, next_attempt_at);`,
  // Least privilege: tokens get an expiry and the time of their last use; the old 'user'
  // role (never issued) becomes 'operator', so no row keeps a role the API does not know.
  (d) => `ALTER TABLE tokens ADD COLUMN expires_at ${d.text};
   ALTER TABLE tokens ADD COLUMN last_used_at ${d.text};
   UPDATE tokens SET role = 'operator' WHERE role = 'user';`,
  // Secrets at rest: an admin token's pairing key, sealed with DATA/secret.key (the stored
  // hash was the key before, so the database alone let anyone pair). Values in clear in
  // peers.token, storage_arrays.connection and the webhook URL are sealed at start (main.ts).
  (d) => `ALTER TABLE tokens ADD COLUMN pairing_key ${d.text};`,
  // The audit log: one row per state-changing or refused API call, hash-chained (src/audit/audit-log.ts);
  // its head is kept in meta ('audit.head') so removing the newest rows shows too. The triggers
  // stop the code (not someone holding the file) from editing it: the chain catches the rest.
  (
    d,
  ) => `CREATE TABLE audit_log (seq ${d.int} PRIMARY KEY, at ${d.text} NOT NULL, token_id ${d.text}, role ${d.text}, source ${d.text} NOT NULL,
     method ${d.text} NOT NULL, route ${d.text} NOT NULL, target ${d.text}, status ${d.int} NOT NULL, error_code ${d.text}, request_id ${d.text},
     prev_hash ${d.text} NOT NULL, hash ${d.text} NOT NULL);
   CREATE INDEX audit_log_at ON audit_log(at);
   CREATE INDEX audit_log_token ON audit_log(token_id, seq);
   ${d.appendOnly('audit_log')}`,
  // Desktop pools: a desktop is in use when assigned to a user or with a session (a broker
  // reports sessions); static addresses are reserved one row each, the address the key, so
  // two desktops never hold one address, whichever pools and whatever runs at once.
  (d) => `ALTER TABLE pool_desktops ADD COLUMN ${d.column('session_user')} ${d.text};
   ALTER TABLE pool_desktops ADD COLUMN session_since ${d.text};
   CREATE TABLE pool_addresses (address ${d.text} PRIMARY KEY, pool ${d.text} NOT NULL REFERENCES desktop_pools(name) ON DELETE CASCADE,
     vm_id ${d.text} NOT NULL UNIQUE, reserved_at ${d.text} NOT NULL);`,
  // One journal engine (issue 20): a job's context carries the version of its kind's schema, so
  // a context written by another version is upgraded or refused, never misread.
  (d) => `ALTER TABLE jobs ADD COLUMN context_version ${d.int};`,
  // The newest cycle's figures beside the last ten, written by the same update: the status of
  // all replications reads it alone, not 2 KB of JSON a row that the database would have to
  // parse (and on PostgreSQL, unTOAST) for each request (bench/store). Rows already there get it
  // from their stats.
  (d) => `ALTER TABLE replications ADD COLUMN last_cycle ${d.text};
   UPDATE replications SET last_cycle = ${
     d.name === 'postgres' ? `(stats::json -> -1)::text` : `json_extract(stats, '$[#-1]')`
   };`,
  // A peer link's replication budget (issue 21): a bandwidth cap in bits per second (null: none)
  // and the schedule it applies in (null: always), and the cycles it carries at once (null: the
  // default), set with 'mamori site link'.
  (d) => `ALTER TABLE peers ADD COLUMN link_bits_per_second ${d.int};
   ALTER TABLE peers ADD COLUMN link_schedule ${d.text};
   ALTER TABLE peers ADD COLUMN link_concurrency ${d.int};`,
  // Continuous replication (issue 22): the journal's checkpoint interval and window, as JSON;
  // null for a VM replicated in cycles.
  (d) => `ALTER TABLE replications ADD COLUMN continuous ${d.text};`,
];

/** The steps' SQL for a dialect, in order. */
export function migrationSql(d: MigrationDialect): string[] {
  return MIGRATIONS.map((m) => m(d));
}

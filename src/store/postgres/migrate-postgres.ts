import type pg from 'pg';
import { migrationSql, POSTGRES_MIGRATION_DIALECT } from '../migrations.js';

/** The advisory lock key servers take while migrating one database (any fixed number; "mamori" in ASCII). */
const MIGRATION_LOCK = 0x6d616d6f7269;

/**
 * Brings a PostgreSQL database's schema up to date: each step not yet applied runs in a
 * transaction with the version bump (PostgreSQL's DDL is transactional). Two servers
 * started at once on one database take turns: the second finds nothing left to do.
 */
export async function migratePostgres(client: pg.ClientBase): Promise<void> {
  const steps = migrationSql(POSTGRES_MIGRATION_DIALECT);
  await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
  try {
    await client.query('CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)');
    const rows = (await client.query<{ version: string | number }>('SELECT version FROM schema_version')).rows;
    let version = rows[0] === undefined ? 0 : Number(rows[0].version);
    if (rows[0] === undefined) await client.query('INSERT INTO schema_version (version) VALUES (0)');
    while (version < steps.length) {
      await client.query('BEGIN');
      try {
        // No parameters: node-postgres sends it as a simple query, so one step may hold several statements.
        await client.query(steps[version]!);
        await client.query('UPDATE schema_version SET version = $1', [version + 1]);
        await client.query('COMMIT');
      } catch (e) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw e;
      }
      version += 1;
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
  }
}

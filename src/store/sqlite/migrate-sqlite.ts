import type BetterSqlite3 from 'better-sqlite3';
import { migrationSql, SQLITE_MIGRATION_DIALECT } from '../migrations.js';

/**
 * Brings a SQLite database's schema up to date: each step not yet applied runs in a
 * transaction with the version bump. Synchronous (better-sqlite3), before Kysely opens it.
 */
export function migrateSqlite(db: BetterSqlite3.Database): void {
  const steps = migrationSql(SQLITE_MIGRATION_DIALECT);
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
  let version = row?.version ?? 0;
  if (row === undefined) db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
  while (version < steps.length) {
    const step = steps[version]!;
    db.transaction(() => {
      db.exec(step);
      db.prepare('UPDATE schema_version SET version = ?').run(version + 1);
    })();
    version += 1;
  }
}

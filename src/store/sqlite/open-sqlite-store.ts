import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import type { Database } from '../schema.js';
import type { Store } from '../store.js';
import { storeHandle } from '../store-handle.js';
import { migrateSqlite } from './migrate-sqlite.js';

/** A store on SQLite (the name older callers know it by). */
export type SqliteStore = Store;

/**
 * Opens (creating if needed) the site's SQLite file in WAL mode and brings its schema
 * up to date. WAL lets the CLI read while the server writes and survives kill -9.
 */
export async function openSqliteStore(file: string): Promise<Store> {
  const raw = new BetterSqlite3(file);
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.pragma('foreign_keys = ON');
  raw.pragma('busy_timeout = 5000');
  // Deleted and rewritten content is zeroed, not left in free space: a secret sealed at the
  // upgrade, or a revoked row, does not linger in clear in the file.
  raw.pragma('secure_delete = ON');
  migrateSqlite(raw);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: raw }) });
  return {
    handle: storeHandle(db),
    db,
    dialect: 'sqlite',
    async close() {
      await db.destroy();
    },
  };
}

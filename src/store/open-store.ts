import type { Store } from './store.js';
import { openSqliteStore } from './sqlite/open-sqlite-store.js';
import { openPostgresStore } from './postgres/open-postgres-store.js';

export interface StoreLocation {
  /** The SQLite file in the data folder: the database unless a PostgreSQL URL is given. */
  sqliteFile: string;
  /** postgresql://... (serve --db, MAMORI_DB): the site's database is there instead. */
  postgresUrl?: string | undefined;
}

/** Opens the site's database, SQLite by default or PostgreSQL when a URL is given, schema up to date. */
export async function openStore(at: StoreLocation): Promise<Store> {
  return at.postgresUrl === undefined ? openSqliteStore(at.sqliteFile) : openPostgresStore(at.postgresUrl);
}

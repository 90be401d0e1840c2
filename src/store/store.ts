import type { Kysely } from 'kysely';
import type { Database } from './schema.js';
import type { StoreHandle } from './store-handle.js';

/** The databases the store runs on: SQLite (embedded, the default) or PostgreSQL (--db). */
export type StoreDialect = 'sqlite' | 'postgres';

/** An open database with its schema up to date. */
export interface Store {
  /** What services receive and hand to repositories: no queries outside store/ (store-handle.ts). */
  handle: StoreHandle;
  /** The database itself, for store/ and for tests that check rows directly. Services take `handle`. */
  db: Kysely<Database>;
  dialect: StoreDialect;
  close(): Promise<void>;
}

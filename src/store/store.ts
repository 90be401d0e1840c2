import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

/** The databases the store runs on: SQLite (embedded, the default) or PostgreSQL (--db). */
export type StoreDialect = 'sqlite' | 'postgres';

/** An open database with its schema up to date. */
export interface Store {
  db: Kysely<Database>;
  dialect: StoreDialect;
  close(): Promise<void>;
}

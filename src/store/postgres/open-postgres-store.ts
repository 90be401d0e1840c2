import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import { MamoriError } from '../../core/mamori-error.js';
import type { Database } from '../schema.js';
import type { Store } from '../store.js';
import { storeHandle } from '../store-handle.js';
import { parseDatabaseUrl } from './database-url.js';
import { migratePostgres } from './migrate-postgres.js';

const INT8_OID = 20;
const NUMERIC_OID = 1700;

/**
 * Rows read as SQLite gives them: BIGINT (every whole-number column, COUNT(*)) and NUMERIC
 * (SUM of BIGINTs) as numbers, not the strings node-postgres returns by default. Values past
 * 2^53 are refused rather than rounded: none of ours comes near (byte sizes, ms, counters).
 */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8_OID || oid === NUMERIC_OID) return parseNumber;
    return pg.types.getTypeParser(oid, format ?? 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

function parseNumber(text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || (Number.isInteger(n) && !Number.isSafeInteger(n)))
    throw new MamoriError('STORE_ROW_INVALID', `the database returned ${text}, beyond what mamori reads exactly`);
  return n;
}

export interface PostgresStoreOptions {
  /** Connections the pool may hold (default 10). */
  maxConnections?: number;
}

/**
 * Opens a site's database on PostgreSQL (`serve --db postgresql://...`) and brings its schema
 * up to date. Errors name the URL with its password masked, never in clear.
 */
export async function openPostgresStore(urlText: string, options: PostgresStoreOptions = {}): Promise<Store> {
  const url = parseDatabaseUrl(urlText);
  const pool = new pg.Pool({
    connectionString: url.url,
    types: TYPES,
    max: options.maxConnections ?? 10,
    connectionTimeoutMillis: 30_000,
  });
  // An idle connection the server dropped: the pool discards it and the next query opens a
  // new one (or fails, with its own error). Without a listener the process would exit.
  pool.on('error', () => undefined);
  try {
    const client = await pool.connect().catch((e: unknown) => {
      throw new MamoriError(
        'STORE_UNAVAILABLE',
        `cannot connect to the database ${url.shown}: ${e instanceof Error ? e.message : String(e)}`,
      );
    });
    try {
      await migratePostgres(client);
    } finally {
      client.release();
    }
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw e;
  }
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    handle: storeHandle(db),
    db,
    dialect: 'postgres',
    async close() {
      await db.destroy();
    },
  };
}

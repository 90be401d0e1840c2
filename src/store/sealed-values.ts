import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.js';
import { unwrapStoreHandle, type StoreHandle } from './store-handle.js';
import { SEALED_PREFIX } from '../core/secret-box.js';

/**
 * Whether the database holds any value sealed with DATA/secret.key. If it does and the key
 * file is missing, a new key must not be made: it would open none of them (SECRET_KEY_MISSING).
 */
export async function holdsSealedValues(store: StoreHandle): Promise<boolean> {
  const db: Kysely<Database> = unwrapStoreHandle(store);
  const like = `${SEALED_PREFIX}%`;
  const r = await sql<{ n: number }>`SELECT
      (SELECT count(*) FROM tokens WHERE pairing_key IS NOT NULL)
    + (SELECT count(*) FROM peers WHERE token LIKE ${like})
    + (SELECT count(*) FROM storage_arrays WHERE connection LIKE ${like})
    + (SELECT count(*) FROM meta WHERE value LIKE ${like}) AS n`.execute(db);
  return Number(r.rows[0]?.n ?? 0) > 0;
}

import { PostgresAdapter, sql, type Transaction } from 'kysely';
import type { Database } from './schema.js';

/**
 * Makes the transactions that take the lock `name` run one after another, until each commits
 * or rolls back: for a read-then-write that must not interleave with another (the next number
 * of a chain, a row that may not exist yet, so there is no row to lock). SQLite has one writer
 * at a time already (the caller's first write takes it); PostgreSQL takes a transaction-scoped
 * advisory lock, which other servers on the same database honour too.
 */
export async function writeLock(tx: Transaction<Database>, name: string): Promise<void> {
  if (!(tx.getExecutor().adapter instanceof PostgresAdapter)) return;
  await sql`SELECT pg_advisory_xact_lock(hashtext(${name}))`.execute(tx);
}

import type { Kysely, Selectable, Transaction } from 'kysely';
import type { AuditLogTable, Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { AuditEntry, AuditFilter, ChainHead } from '../records/audit-entry.js';
import { writeLock } from '../write-lock.js';

/** The meta key of the audit chain's head: {"seq": N, "hash": "..."}. */
const HEAD_KEY = 'audit.head';

type Db = Kysely<Database> | Transaction<Database>;

/** The audit_log table and its chain head (src/audit/audit-log.ts makes and checks the chain). */
export class AuditRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  /**
   * Reads the head, builds the next entry from it and stores both in one transaction.
   * The transaction writes first (a no-op update of the head), so it holds SQLite's write
   * lock before it reads: no other writer, even in another process, can chain from the same
   * head between the read and the insert. PostgreSQL has no such lock (and no head row to
   * lock before the first entry), so there the transaction takes a named lock first.
   */
  async append(build: (head: ChainHead | null) => AuditEntry): Promise<AuditEntry> {
    return this.#db.transaction().execute(async (tx) => {
      await writeLock(tx, 'audit_log');
      await tx
        .updateTable('meta')
        .set((eb) => ({ value: eb.ref('value') }))
        .where('key', '=', HEAD_KEY)
        .execute();
      const entry = build(await readHead(tx));
      await tx.insertInto('audit_log').values(toRow(entry)).execute();
      const value = JSON.stringify({ seq: entry.seq, hash: entry.hash });
      await tx
        .insertInto('meta')
        .values({ key: HEAD_KEY, value })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
        .execute();
      return entry;
    });
  }

  async head(): Promise<ChainHead | null> {
    return readHead(this.#db);
  }

  /** Up to `limit` entries after `afterSeq`, oldest first (the verifier's walk). */
  async page(afterSeq: number, limit: number): Promise<AuditEntry[]> {
    const rows = await this.#db
      .selectFrom('audit_log')
      .selectAll()
      .where('seq', '>', afterSeq)
      .orderBy('seq')
      .limit(limit)
      .execute();
    return rows.map(toEntry);
  }

  /** Newest first. */
  async list(f: AuditFilter): Promise<AuditEntry[]> {
    let q = this.#db.selectFrom('audit_log').selectAll();
    if (f.since !== undefined) q = q.where('at', '>=', f.since);
    if (f.tokenId !== undefined) q = q.where('token_id', '=', f.tokenId);
    if (f.beforeSeq !== undefined) q = q.where('seq', '<', f.beforeSeq);
    return (await q.orderBy('seq', 'desc').limit(f.limit).execute()).map(toEntry);
  }
}

async function readHead(db: Db): Promise<ChainHead | null> {
  const row = await db.selectFrom('meta').select('value').where('key', '=', HEAD_KEY).executeTakeFirst();
  if (!row) return null;
  // A head someone garbled is not parsed into a valid one: the verifier reports the mismatch.
  try {
    const v = JSON.parse(row.value) as { seq?: unknown; hash?: unknown };
    return typeof v.seq === 'number' && typeof v.hash === 'string'
      ? { seq: v.seq, hash: v.hash }
      : { seq: -1, hash: '' };
  } catch {
    return { seq: -1, hash: '' };
  }
}

function toRow(e: AuditEntry): AuditLogTable {
  return {
    seq: e.seq,
    at: e.at,
    token_id: e.tokenId,
    role: e.role,
    source: e.source,
    method: e.method,
    route: e.route,
    target: e.target === null ? null : JSON.stringify(e.target),
    status: e.status,
    error_code: e.errorCode,
    request_id: e.requestId,
    prev_hash: e.prevHash,
    hash: e.hash,
  };
}

function toEntry(r: Selectable<AuditLogTable>): AuditEntry {
  return {
    seq: r.seq,
    at: r.at,
    tokenId: r.token_id,
    role: r.role,
    source: r.source,
    method: r.method,
    route: r.route,
    target: r.target === null ? null : parseTarget(r.target),
    status: r.status,
    errorCode: r.error_code,
    requestId: r.request_id,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** A target someone made unparsable still loads (and then fails its hash) rather than failing the walk. */
function parseTarget(text: string): Record<string, string> {
  try {
    return JSON.parse(text) as Record<string, string>;
  } catch {
    return { unparsable: text };
  }
}

import { createHash } from 'node:crypto';
import type { AuditRepo } from '../store/repos/audit-repo.js';
import type { AuditEntry, AuditFilter, AuditRecord, ChainHead } from './audit-entry.js';

export type { AuditEntry, AuditFilter, AuditRecord, ChainHead };

/**
 * edited: the entry's fields no longer give its hash; sequence-gap: entries before it are
 * missing; chain-broken: it does not follow the entry before it (reordered, or one replaced);
 * head-mismatch: the newest entries were removed (or the head was altered).
 */
export type AuditProblem = 'edited' | 'sequence-gap' | 'chain-broken' | 'head-mismatch';

export interface AuditVerification {
  ok: boolean;
  /** Entries walked. */
  entries: number;
  head: ChainHead | null;
  firstBad?: { seq: number; problem: AuditProblem; message: string };
}

/** The prev_hash of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** JSON with object keys sorted at every level: the same fields always hash the same. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** sha256(prev_hash || canonical JSON of the entry's fields, its number included). */
export function entryHash(prevHash: string, seq: number, r: AuditRecord): string {
  const fields = {
    seq,
    at: r.at,
    tokenId: r.tokenId,
    role: r.role,
    source: r.source,
    method: r.method,
    route: r.route,
    target: r.target,
    status: r.status,
    errorCode: r.errorCode,
    requestId: r.requestId,
  };
  return createHash('sha256').update(prevHash, 'utf8').update(canonicalJson(fields), 'utf8').digest('hex');
}

/** The entry that follows `head` (the first one when there is no head). */
export function chainEntry(head: ChainHead | null, record: AuditRecord): AuditEntry {
  const seq = (head?.seq ?? 0) + 1;
  const prevHash = head?.hash ?? GENESIS_HASH;
  return { ...record, seq, prevHash, hash: entryHash(prevHash, seq, record) };
}

/** What is wrong with `e` as the successor of `prev` (null: e is the first); undefined when nothing. */
export function checkLink(
  prev: ChainHead | null,
  e: AuditEntry,
): { problem: AuditProblem; message: string } | undefined {
  const expectedSeq = (prev?.seq ?? 0) + 1;
  if (e.seq !== expectedSeq) {
    const missing =
      e.seq - 1 === expectedSeq ? `entry #${expectedSeq} is` : `entries #${expectedSeq} to #${e.seq - 1} are`;
    return { problem: 'sequence-gap', message: `${missing} missing before entry #${e.seq}: removed from the database` };
  }
  if (e.prevHash !== (prev?.hash ?? GENESIS_HASH)) {
    return {
      problem: 'chain-broken',
      message: `entry #${e.seq} does not follow entry #${prev?.seq ?? 0}: entries were reordered or replaced`,
    };
  }
  if (entryHash(e.prevHash, e.seq, e) !== e.hash) {
    return {
      problem: 'edited',
      message: `entry #${e.seq} was changed after it was written (its fields no longer give its hash)`,
    };
  }
  return undefined;
}

const PAGE = 1000;

/**
 * The append-only, hash-chained audit log. Appends are queued here one after another (and
 * the repository writes each in one transaction), so two requests never chain from the same
 * head; the queue also lets a reader wait for the appends already asked for.
 */
export class AuditLog {
  #repo: AuditRepo;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(repo: AuditRepo) {
    this.#repo = repo;
  }

  /** Queued at once (synchronously), written in order. */
  append(record: AuditRecord): Promise<AuditEntry> {
    const done = this.#queue.then(() => this.#repo.append((head) => chainEntry(head, record)));
    this.#queue = done.catch(() => undefined);
    return done;
  }

  /** Resolves when every append asked for so far has been written (or has failed). */
  async settled(): Promise<void> {
    await this.#queue;
  }

  /** Newest first; sees every append asked for before the call. */
  async list(filter: AuditFilter): Promise<AuditEntry[]> {
    await this.settled();
    return this.#repo.list(filter);
  }

  /** Walks the whole chain from the first entry and reports the first broken one. */
  async verify(): Promise<AuditVerification> {
    await this.settled();
    let prev: ChainHead | null = null;
    let entries = 0;
    for (;;) {
      const page = await this.#repo.page(prev?.seq ?? 0, PAGE);
      if (page.length === 0) {
        const head = await this.#repo.head();
        // An append that committed between the last page and this read: walk it too.
        if (head && head.seq > (prev?.seq ?? 0) && (await this.#repo.page(prev?.seq ?? 0, 1)).length > 0) continue;
        if (head?.seq === prev?.seq && head?.hash === prev?.hash) return { ok: true, entries, head };
        const removed = head !== null && head.seq > (prev?.seq ?? 0);
        const message = removed
          ? `the newest entries (#${(prev?.seq ?? 0) + 1} to #${head.seq}) were removed from the database`
          : `the chain head kept apart (${head ? `#${head.seq}` : 'none'}) does not match the newest entry (#${prev?.seq ?? 'none'})`;
        return {
          ok: false,
          entries,
          head,
          firstBad: { seq: removed ? (prev?.seq ?? 0) + 1 : (prev?.seq ?? 0), problem: 'head-mismatch', message },
        };
      }
      for (const e of page) {
        entries += 1;
        const bad = checkLink(prev, e);
        if (bad) return { ok: false, entries, head: await this.#repo.head(), firstBad: { seq: e.seq, ...bad } };
        prev = { seq: e.seq, hash: e.hash };
      }
    }
  }
}

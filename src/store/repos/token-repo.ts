import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { newShortId } from '../../core/ids.js';
import type { Role } from '../../core/roles.js';

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** The roles of src/api/route-roles.ts; 'site' tokens are issued only by pairing. */
export type TokenRole = Role;

export interface TokenIdentity {
  id: string;
  name: string;
  role: TokenRole;
}

/** A token as listed: never its clear text nor its hash. */
export interface TokenInfo extends TokenIdentity {
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
}

/** last_used_at is written at most this often per token: a busy client must not write on every call. */
const LAST_USED_RESOLUTION_MS = 60_000;

/** API tokens, stored only as sha256 hashes. */
export class TokenRepo {
  #db: Kysely<Database>;
  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async hasAdmin(): Promise<boolean> {
    return (await this.#db.selectFrom('tokens').select('id').where('role', '=', 'admin').executeTakeFirst()) !== undefined;
  }

  /** Creates a token and returns its clear text, which is never stored. */
  async create(name: string, role: TokenRole): Promise<string> {
    return (await this.createWithId(name, role)).token;
  }

  /** Like create, also returning the row id (to revoke it later). */
  async createWithId(name: string, role: TokenRole, opts: { expiresAt?: string | null } = {}): Promise<{ id: string; token: string }> {
    const token = `mamori_${randomBytes(24).toString('base64url')}`;
    const id = newShortId('tok');
    await this.#db
      .insertInto('tokens')
      .values({ id, name, hash: hashToken(token), role, created_at: new Date().toISOString(), expires_at: opts.expiresAt ?? null })
      .execute();
    return { id, token };
  }

  async get(id: string): Promise<TokenInfo | undefined> {
    const r = await this.#db.selectFrom('tokens').select(['id', 'name', 'role', 'created_at', 'expires_at', 'last_used_at']).where('id', '=', id).executeTakeFirst();
    return r ? info(r) : undefined;
  }

  async list(): Promise<TokenInfo[]> {
    const rows = await this.#db.selectFrom('tokens').select(['id', 'name', 'role', 'created_at', 'expires_at', 'last_used_at']).orderBy('created_at').orderBy('id').execute();
    return rows.map(info);
  }

  /** How many admin tokens would still work now (revoking the last one would lock the site out). */
  async liveAdminCount(now = new Date()): Promise<number> {
    const rows = await this.#db.selectFrom('tokens').select(['expires_at']).where('role', '=', 'admin').execute();
    return rows.filter((r) => !r.expires_at || Date.parse(r.expires_at) > now.getTime()).length;
  }

  async revoke(id: string): Promise<void> {
    await this.#db.deleteFrom('tokens').where('id', '=', id).execute();
  }

  /** The stored hashes of the admin tokens: the pairing proof is keyed by them (src/sites/pairing-proof.ts). */
  async adminHashes(): Promise<string[]> {
    return (await this.#db.selectFrom('tokens').select('hash').where('role', '=', 'admin').execute()).map((r) => r.hash);
  }

  /** The token's owner, or undefined for an unknown or expired token. */
  async verify(token: string, now = new Date()): Promise<TokenIdentity | undefined> {
    const hash = hashToken(token);
    const row = await this.#db.selectFrom('tokens').select(['id', 'name', 'role', 'hash', 'expires_at', 'last_used_at']).where('hash', '=', hash).executeTakeFirst();
    if (!row || !timingSafeEqual(Buffer.from(row.hash), Buffer.from(hash))) return undefined;
    if (row.expires_at && Date.parse(row.expires_at) <= now.getTime()) return undefined;
    if (!row.last_used_at || now.getTime() - Date.parse(row.last_used_at) >= LAST_USED_RESOLUTION_MS) {
      await this.#db.updateTable('tokens').set({ last_used_at: now.toISOString() }).where('id', '=', row.id).execute();
    }
    return { id: row.id, name: row.name, role: row.role as TokenRole };
  }
}

function info(r: { id: string; name: string; role: string; created_at: string; expires_at: string | null; last_used_at: string | null }): TokenInfo {
  return { id: r.id, name: r.name, role: r.role as TokenRole, createdAt: r.created_at, expiresAt: r.expires_at, lastUsedAt: r.last_used_at };
}

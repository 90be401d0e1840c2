import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { newShortId } from '../../core/ids.js';

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Roles: 'admin' (the operator), 'user', and 'site' (issued to a paired site at pairing;
 * it may call the API but not manage pairings).
 */
export type TokenRole = 'admin' | 'user' | 'site';

export interface TokenIdentity {
  id: string;
  name: string;
  role: string;
}

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
  async createWithId(name: string, role: TokenRole): Promise<{ id: string; token: string }> {
    const token = `mamori_${randomBytes(24).toString('base64url')}`;
    const id = newShortId('tok');
    await this.#db
      .insertInto('tokens')
      .values({ id, name, hash: hashToken(token), role, created_at: new Date().toISOString() })
      .execute();
    return { id, token };
  }

  async revoke(id: string): Promise<void> {
    await this.#db.deleteFrom('tokens').where('id', '=', id).execute();
  }

  /** The stored hashes of the admin tokens: the pairing proof is keyed by them (src/sites/pairing-proof.ts). */
  async adminHashes(): Promise<string[]> {
    return (await this.#db.selectFrom('tokens').select('hash').where('role', '=', 'admin').execute()).map((r) => r.hash);
  }

  async verify(token: string): Promise<TokenIdentity | undefined> {
    const hash = hashToken(token);
    const row = await this.#db.selectFrom('tokens').select(['id', 'name', 'role', 'hash']).where('hash', '=', hash).executeTakeFirst();
    if (!row || !timingSafeEqual(Buffer.from(row.hash), Buffer.from(hash))) return undefined;
    return { id: row.id, name: row.name, role: row.role };
  }
}

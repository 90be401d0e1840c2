import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { newShortId } from '../../core/ids.js';
import type { SecretBox } from '../../core/secret-box.js';

/** What the API looks a token up by: one-way, so the stored hash does not call the API. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * The pairing key K of an admin token (src/sites/pairing-proof.ts). Derived apart from the
 * lookup hash, so the hash in the database is not K; the peer keeps K only sealed.
 */
export function pairingKeyOf(token: string): Buffer {
  return createHmac('sha256', Buffer.from(token, 'utf8')).update('mamori pairing key v2', 'utf8').digest();
}

const pairingPurpose = (id: string): string => `tokens.pairing_key:${id}`;

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

/** API tokens, stored only as sha256 hashes; an admin token also as its pairing key, sealed. */
export class TokenRepo {
  #db: Kysely<Database>;
  #box: SecretBox;
  constructor(db: Kysely<Database>, box: SecretBox) {
    this.#db = db;
    this.#box = box;
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
    const pairingKey = role === 'admin' ? this.#box.seal(pairingPurpose(id), pairingKeyOf(token)) : null;
    await this.#db
      .insertInto('tokens')
      .values({ id, name, hash: hashToken(token), role, pairing_key: pairingKey, created_at: new Date().toISOString() })
      .execute();
    return { id, token };
  }

  async revoke(id: string): Promise<void> {
    await this.#db.deleteFrom('tokens').where('id', '=', id).execute();
  }

  /** The pairing keys of the admin tokens, opened: the pairing proof is keyed by them (src/sites/pairing-proof.ts). */
  async pairingKeys(): Promise<Buffer[]> {
    const rows = await this.#db.selectFrom('tokens').select(['id', 'pairing_key']).where('role', '=', 'admin').where('pairing_key', 'is not', null).execute();
    return rows.map((r) => this.#box.open(pairingPurpose(r.id), r.pairing_key!));
  }

  /**
   * Upgrade from before pairing keys were sealed: an admin row without one gets it when the
   * admin token in clear (DATA/admin-token) is at hand and matches it. Returns how many admin
   * rows still have none (they cannot be paired with; a new admin token can).
   */
  async sealMissingPairingKeys(adminToken: string | null): Promise<number> {
    const rows = await this.#db.selectFrom('tokens').select(['id', 'hash']).where('role', '=', 'admin').where('pairing_key', 'is', null).execute();
    let left = rows.length;
    if (adminToken === null) return left;
    const hash = hashToken(adminToken);
    for (const r of rows) {
      if (!timingSafeEqual(Buffer.from(r.hash), Buffer.from(hash))) continue;
      await this.#db.updateTable('tokens').set({ pairing_key: this.#box.seal(pairingPurpose(r.id), pairingKeyOf(adminToken)) }).where('id', '=', r.id).execute();
      left -= 1;
    }
    return left;
  }

  async verify(token: string): Promise<TokenIdentity | undefined> {
    const hash = hashToken(token);
    const row = await this.#db.selectFrom('tokens').select(['id', 'name', 'role', 'hash']).where('hash', '=', hash).executeTakeFirst();
    if (!row || !timingSafeEqual(Buffer.from(row.hash), Buffer.from(hash))) return undefined;
    return { id: row.id, name: row.name, role: row.role };
  }
}

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { newShortId } from '../../core/ids.js';
import type { Role } from '../../core/roles.js';
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

/** API tokens, stored only as sha256 hashes; an admin token also as its pairing key, sealed. */
export class TokenRepo {
  #db: Kysely<Database>;
  #box: SecretBox;
  constructor(db: StoreHandle, box: SecretBox) {
    this.#db = unwrapStoreHandle(db);
    this.#box = box;
  }

  async hasAdmin(): Promise<boolean> {
    return (
      (await this.#db.selectFrom('tokens').select('id').where('role', '=', 'admin').executeTakeFirst()) !== undefined
    );
  }

  /** Creates a token and returns its clear text, which is never stored. */
  async create(name: string, role: TokenRole): Promise<string> {
    return (await this.createWithId(name, role)).token;
  }

  /** Like create, also returning the row id (to revoke it later). */
  async createWithId(
    name: string,
    role: TokenRole,
    opts: { expiresAt?: string | null } = {},
  ): Promise<{ id: string; token: string }> {
    const token = `mamori_${randomBytes(24).toString('base64url')}`;
    const id = newShortId('tok');
    const pairingKey = role === 'admin' ? this.#box.seal(pairingPurpose(id), pairingKeyOf(token)) : null;
    await this.#db
      .insertInto('tokens')
      .values({
        id,
        name,
        hash: hashToken(token),
        role,
        pairing_key: pairingKey,
        created_at: new Date().toISOString(),
        expires_at: opts.expiresAt ?? null,
      })
      .execute();
    return { id, token };
  }

  async get(id: string): Promise<TokenInfo | undefined> {
    const r = await this.#db
      .selectFrom('tokens')
      .select(['id', 'name', 'role', 'created_at', 'expires_at', 'last_used_at'])
      .where('id', '=', id)
      .executeTakeFirst();
    return r ? info(r) : undefined;
  }

  async list(): Promise<TokenInfo[]> {
    const rows = await this.#db
      .selectFrom('tokens')
      .select(['id', 'name', 'role', 'created_at', 'expires_at', 'last_used_at'])
      .orderBy('created_at')
      .orderBy('id')
      .execute();
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

  /** The pairing keys of the admin tokens, opened: the pairing proof is keyed by them (src/sites/pairing-proof.ts). */
  async pairingKeys(): Promise<Buffer[]> {
    const rows = await this.#db
      .selectFrom('tokens')
      .select(['id', 'pairing_key'])
      .where('role', '=', 'admin')
      .where('pairing_key', 'is not', null)
      .execute();
    return rows.map((r) => this.#box.open(pairingPurpose(r.id), r.pairing_key!));
  }

  /**
   * Upgrade from before pairing keys were sealed: an admin row without one gets it when the
   * admin token in clear (DATA/admin-token) is at hand and matches it. Returns how many admin
   * rows still have none (they cannot be paired with; a new admin token can).
   */
  async sealMissingPairingKeys(adminToken: string | null): Promise<number> {
    const rows = await this.#db
      .selectFrom('tokens')
      .select(['id', 'hash'])
      .where('role', '=', 'admin')
      .where('pairing_key', 'is', null)
      .execute();
    let left = rows.length;
    if (adminToken === null) return left;
    const hash = hashToken(adminToken);
    for (const r of rows) {
      if (!timingSafeEqual(Buffer.from(r.hash), Buffer.from(hash))) continue;
      await this.#db
        .updateTable('tokens')
        .set({ pairing_key: this.#box.seal(pairingPurpose(r.id), pairingKeyOf(adminToken)) })
        .where('id', '=', r.id)
        .execute();
      left -= 1;
    }
    return left;
  }

  /** The token's owner, or undefined for an unknown or expired token. */
  async verify(token: string, now = new Date()): Promise<TokenIdentity | undefined> {
    const hash = hashToken(token);
    const row = await this.#db
      .selectFrom('tokens')
      .select(['id', 'name', 'role', 'hash', 'expires_at', 'last_used_at'])
      .where('hash', '=', hash)
      .executeTakeFirst();
    if (!row || !timingSafeEqual(Buffer.from(row.hash), Buffer.from(hash))) return undefined;
    if (row.expires_at && Date.parse(row.expires_at) <= now.getTime()) return undefined;
    if (!row.last_used_at || now.getTime() - Date.parse(row.last_used_at) >= LAST_USED_RESOLUTION_MS) {
      await this.#db.updateTable('tokens').set({ last_used_at: now.toISOString() }).where('id', '=', row.id).execute();
    }
    return { id: row.id, name: row.name, role: row.role as TokenRole };
  }
}

function info(r: {
  id: string;
  name: string;
  role: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}): TokenInfo {
  return {
    id: r.id,
    name: r.name,
    role: r.role as TokenRole,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    lastUsedAt: r.last_used_at,
  };
}

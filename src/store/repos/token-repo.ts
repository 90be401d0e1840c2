import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { newShortId } from '../../core/ids.js';

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
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
  async create(name: string, role: 'admin' | 'user'): Promise<string> {
    const token = `mamori_${randomBytes(24).toString('base64url')}`;
    await this.#db
      .insertInto('tokens')
      .values({ id: newShortId('tok'), name, hash: hashToken(token), role, created_at: new Date().toISOString() })
      .execute();
    return token;
  }

  async verify(token: string): Promise<{ id: string; name: string; role: string } | undefined> {
    const hash = hashToken(token);
    const row = await this.#db.selectFrom('tokens').select(['id', 'name', 'role', 'hash']).where('hash', '=', hash).executeTakeFirst();
    if (!row || !timingSafeEqual(Buffer.from(row.hash), Buffer.from(hash))) return undefined;
    return { id: row.id, name: row.name, role: row.role };
  }
}

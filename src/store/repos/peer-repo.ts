import type { Kysely, Selectable } from 'kysely';
import type { Database, PeerTable } from '../schema.js';
import type { PeerRecord } from '../../sites/peer-record.js';

/** The peers table: paired sites and their pinned CAs. */
export class PeerRepo {
  #db: Kysely<Database>;
  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async list(): Promise<PeerRecord[]> {
    return (await this.#db.selectFrom('peers').selectAll().orderBy('name').execute()).map(toRecord);
  }

  async findByName(name: string): Promise<PeerRecord | undefined> {
    const r = await this.#db.selectFrom('peers').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toRecord(r);
  }

  async findByFingerprint(fingerprint: string): Promise<PeerRecord | undefined> {
    const r = await this.#db.selectFrom('peers').selectAll().where('ca_fingerprint', '=', fingerprint).executeTakeFirst();
    return r && toRecord(r);
  }

  /** The peer that calls us with this token (tokens.id). */
  async findByInboundToken(tokenId: string): Promise<PeerRecord | undefined> {
    const r = await this.#db.selectFrom('peers').selectAll().where('inbound_token_id', '=', tokenId).executeTakeFirst();
    return r && toRecord(r);
  }

  /** Inserts, or replaces the row with the same id. */
  async save(p: PeerRecord): Promise<void> {
    const row = {
      id: p.id, name: p.name, url: p.url, ca_cert_pem: p.caCertPem, ca_fingerprint: p.caFingerprint,
      token: p.token, inbound_token_id: p.inboundTokenId, created_at: p.createdAt, updated_at: p.updatedAt,
    };
    await this.#db.insertInto('peers').values(row).onConflict((oc) => oc.column('id').doUpdateSet(row)).execute();
  }

  async delete(id: string): Promise<void> {
    await this.#db.deleteFrom('peers').where('id', '=', id).execute();
  }
}

function toRecord(r: Selectable<PeerTable>): PeerRecord {
  return {
    id: r.id, name: r.name, url: r.url, caCertPem: r.ca_cert_pem, caFingerprint: r.ca_fingerprint,
    token: r.token, inboundTokenId: r.inbound_token_id, createdAt: r.created_at, updatedAt: r.updated_at,
  };
}

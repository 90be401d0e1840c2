import type { Kysely, Selectable } from 'kysely';
import type { Database, PeerTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { PeerLink, PeerRecord } from '../records/peer-record.js';
import { isSealed, type SecretBox } from '../../core/secret-box.js';

/** The AAD of a peer's token: bound to its row, so a sealed token moved to another peer's row does not open. */
export const peerTokenPurpose = (id: string): string => `peers.token:${id}`;

/** The peers table: paired sites and their pinned CAs; the token a peer issued us is kept sealed. */
export class PeerRepo {
  #db: Kysely<Database>;
  #box: SecretBox;
  constructor(db: StoreHandle, box: SecretBox) {
    this.#db = unwrapStoreHandle(db);
    this.#box = box;
  }

  async list(): Promise<PeerRecord[]> {
    return (await this.#db.selectFrom('peers').selectAll().orderBy('name').execute()).map((r) => this.#toRecord(r));
  }

  async findByName(name: string): Promise<PeerRecord | undefined> {
    const r = await this.#db.selectFrom('peers').selectAll().where('name', '=', name).executeTakeFirst();
    return r && this.#toRecord(r);
  }

  async findByFingerprint(fingerprint: string): Promise<PeerRecord | undefined> {
    const r = await this.#db
      .selectFrom('peers')
      .selectAll()
      .where('ca_fingerprint', '=', fingerprint)
      .executeTakeFirst();
    return r && this.#toRecord(r);
  }

  /** The peer that calls us with this token (tokens.id). */
  async findByInboundToken(tokenId: string): Promise<PeerRecord | undefined> {
    const r = await this.#db.selectFrom('peers').selectAll().where('inbound_token_id', '=', tokenId).executeTakeFirst();
    return r && this.#toRecord(r);
  }

  /** Inserts, or replaces the row with the same id. */
  async save(p: PeerRecord): Promise<void> {
    const row = {
      id: p.id,
      name: p.name,
      url: p.url,
      ca_cert_pem: p.caCertPem,
      ca_fingerprint: p.caFingerprint,
      token: p.token === null ? null : this.#box.seal(peerTokenPurpose(p.id), p.token),
      inbound_token_id: p.inboundTokenId,
      created_at: p.createdAt,
      updated_at: p.updatedAt,
    };
    await this.#db
      .insertInto('peers')
      .values(row)
      .onConflict((oc) => oc.column('id').doUpdateSet(row))
      .execute();
  }

  /**
   * Sets the replication budget of the link to a peer; false when no peer has that name. Apart
   * from save(), which pairing calls, so re-pairing keeps the link's settings.
   */
  async setLink(name: string, link: PeerLink): Promise<boolean> {
    const r = await this.#db
      .updateTable('peers')
      .set({
        link_bits_per_second: link.bitsPerSecond,
        link_schedule: link.schedule,
        link_concurrency: link.concurrency,
        updated_at: new Date().toISOString(),
      })
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async delete(id: string): Promise<void> {
    await this.#db.deleteFrom('peers').where('id', '=', id).execute();
  }

  /** Upgrade: seals tokens stored in clear before sealing; returns how many. */
  async sealClearTokens(): Promise<number> {
    const rows = await this.#db.selectFrom('peers').select(['id', 'token']).where('token', 'is not', null).execute();
    let n = 0;
    for (const r of rows) {
      if (isSealed(r.token)) continue;
      await this.#db
        .updateTable('peers')
        .set({ token: this.#box.seal(peerTokenPurpose(r.id), r.token!) })
        .where('id', '=', r.id)
        .execute();
      n += 1;
    }
    return n;
  }

  #toRecord(r: Selectable<PeerTable>): PeerRecord {
    return {
      id: r.id,
      name: r.name,
      url: r.url,
      caCertPem: r.ca_cert_pem,
      caFingerprint: r.ca_fingerprint,
      token: r.token === null ? null : this.#box.openOrClear(peerTokenPurpose(r.id), r.token),
      inboundTokenId: r.inbound_token_id,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
      link: {
        bitsPerSecond: r.link_bits_per_second,
        schedule: r.link_schedule,
        concurrency: r.link_concurrency,
      },
    };
  }
}

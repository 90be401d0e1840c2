import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { enumColumn } from '../enum-column.js';

export interface InventoryMappingRecord {
  peer: string;
  kind: 'network' | 'pool';
  /** The peer's network or pool. */
  source: string;
  /** This site's network or pool that recovered VMs use. */
  target: string;
  /** Networks only: this site's isolated network for test recoveries. */
  testTarget: string | null;
  createdAt: string;
}

const mappingKind = enumColumn<InventoryMappingRecord['kind']>('inventory_mappings.kind', ['network', 'pool']);

/** The inventory_mappings table: how a paired site's networks and pools map onto this site's. */
export class InventoryMappingRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  /** Sets the mapping of (peer, kind, source), replacing its targets if there is one. */
  async save(m: Omit<InventoryMappingRecord, 'createdAt'>, now: string): Promise<void> {
    await this.#db
      .insertInto('inventory_mappings')
      .values({
        peer: m.peer,
        kind: m.kind,
        source: m.source,
        target: m.target,
        test_target: m.testTarget,
        created_at: now,
      })
      .onConflict((oc) =>
        oc.columns(['peer', 'kind', 'source']).doUpdateSet({ target: m.target, test_target: m.testTarget }),
      )
      .execute();
  }

  async list(filter: { peer?: string } = {}): Promise<InventoryMappingRecord[]> {
    let q = this.#db.selectFrom('inventory_mappings').selectAll();
    if (filter.peer !== undefined) q = q.where('peer', '=', filter.peer);
    const rows = await q.orderBy('peer').orderBy('kind').orderBy('source').execute();
    return rows.map((r) => ({
      peer: r.peer,
      kind: mappingKind(r.kind),
      source: r.source,
      target: r.target,
      testTarget: r.test_target,
      createdAt: r.created_at,
    }));
  }

  /** True when a mapping was deleted. */
  async delete(peer: string, kind: InventoryMappingRecord['kind'], source: string): Promise<boolean> {
    const r = await this.#db
      .deleteFrom('inventory_mappings')
      .where('peer', '=', peer)
      .where('kind', '=', kind)
      .where('source', '=', source)
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}

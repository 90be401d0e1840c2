import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { PlanSpec, ProtectedInventory } from '../records/plan-record.js';
import { jsonColumn } from '../json-column.js';

/** plans.spec: the plan as checked when it was applied (plans/plan-spec.ts checks it in full). */
export const planSpecColumn = jsonColumn<PlanSpec>('plans.spec', {
  type: 'object',
  required: ['name', 'protectionGroups', 'vms', 'steps'],
  properties: {
    name: { type: 'string' },
    description: { type: 'string' },
    protectedSite: { type: ['string', 'null'] },
    protectionGroups: { type: 'array', items: { type: 'string' } },
    protectedVms: { type: 'array', items: { type: 'string' } },
    shutdownTimeoutSec: { type: 'number' },
    concurrency: { type: 'number' },
    vms: { type: 'object' },
    steps: { type: 'array' },
  },
});

/** plans.inventory: the protected site's inventory when last seen (a disaster recovery runs from it). */
export const planInventoryColumn = jsonColumn<ProtectedInventory>('plans.inventory', {
  type: 'object',
  required: ['site', 'takenAt', 'groups', 'vms'],
  properties: {
    site: { type: 'string' },
    takenAt: { type: 'string' },
    groups: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'vms'],
        properties: { name: { type: 'string' }, vms: { type: 'array', items: { type: 'string' } } },
      },
    },
    vms: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'name', 'definition', 'disks'],
        properties: {
          id: { type: 'string' },
          name: { type: 'string' },
          definition: { type: 'object' },
          disks: { type: 'array' },
        },
      },
    },
  },
});

export interface PlanRecord {
  name: string;
  /** The protected site whose groups the plan recovers here. */
  peer: string;
  spec: PlanSpec;
  /** The YAML it was applied from, if any. */
  sourceText: string | null;
  inventory: ProtectedInventory;
  createdAt: string;
  updatedAt: string;
}

/** The plans table (recovery plans kept at the recovery site). */
export class PlanRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async find(name: string): Promise<PlanRecord | undefined> {
    const r = await this.#db.selectFrom('plans').selectAll().where('name', '=', name).executeTakeFirst();
    return (
      r && {
        name: r.name,
        peer: r.peer,
        spec: planSpecColumn.decode(r.spec),
        sourceText: r.source_text,
        inventory: planInventoryColumn.decode(r.inventory),
        createdAt: r.created_at,
        updatedAt: r.updated_at,
      }
    );
  }

  async names(): Promise<string[]> {
    return (await this.#db.selectFrom('plans').select('name').orderBy('name').execute()).map((r) => r.name);
  }

  /** Creates the plan, or replaces the one of the same name (keeping when it was first made). */
  async save(p: {
    peer: string;
    spec: PlanSpec;
    sourceText: string | null;
    inventory: ProtectedInventory;
    at: string;
  }): Promise<void> {
    const row = {
      peer: p.peer,
      spec: planSpecColumn.encode(p.spec),
      source_text: p.sourceText,
      inventory: planInventoryColumn.encode(p.inventory),
      updated_at: p.at,
    };
    await this.#db
      .insertInto('plans')
      .values({ name: p.spec.name, created_at: p.at, ...row })
      .onConflict((oc) => oc.column('name').doUpdateSet(row))
      .execute();
  }

  async setInventory(name: string, inventory: ProtectedInventory): Promise<void> {
    await this.#db
      .updateTable('plans')
      .set({ inventory: planInventoryColumn.encode(inventory) })
      .where('name', '=', name)
      .execute();
  }

  async delete(name: string): Promise<void> {
    await this.#db.deleteFrom('plans').where('name', '=', name).execute();
  }
}

import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { ArrayBinding, ArraySyncState } from '../records/protection-group-record.js';
import { jsonColumn } from '../json-column.js';

/** protection_groups.array_binding: what binds an array-based group to its storage. */
export const arrayBindingColumn = jsonColumn<ArrayBinding>('protection_groups.array_binding', {
  type: 'object',
  required: ['storage', 'arrayId', 'deviceIds', 'peer'],
  properties: {
    storage: { type: 'string' },
    arrayId: { type: 'string' },
    deviceIds: { type: 'array', items: { type: 'string' } },
    peer: { type: 'string' },
    forced: { type: 'boolean' },
    compat: { type: 'string' },
    rpoSeconds: { type: ['number', 'null'] },
  },
});

/** protection_groups.array_sync: an array-based group's last syncs. */
export const arraySyncColumn = jsonColumn<ArraySyncState>('protection_groups.array_sync', {
  type: 'object',
  properties: {
    lastPointAt: { type: ['string', 'null'] },
    lastPoint: { type: ['string', 'null'] },
    lastBytesSent: { type: ['number', 'null'] },
    failures: { type: 'number' },
    lastError: { type: ['string', 'null'] },
    lastAttemptEndedAt: { type: ['string', 'null'] },
    recentMs: { type: 'array', items: { type: 'number' } },
  },
});

export interface ProtectionGroupRecord {
  id: string;
  name: string;
  createdAt: string;
  /** null: a host-based group (its VMs are replicated by mamori). */
  arrayBinding: ArrayBinding | null;
}

/** Protection groups (recovery plans), their member VMs, and array-based groups' binding and sync state. */
export class ProtectionGroupRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async find(name: string): Promise<ProtectionGroupRecord | undefined> {
    const g = await this.#db
      .selectFrom('protection_groups')
      .select(['id', 'name', 'created_at', 'array_binding'])
      .where('name', '=', name)
      .executeTakeFirst();
    return (
      g && {
        id: g.id,
        name: g.name,
        createdAt: g.created_at,
        arrayBinding: g.array_binding === null ? null : arrayBindingColumn.decode(g.array_binding),
      }
    );
  }

  async names(): Promise<string[]> {
    return (await this.#db.selectFrom('protection_groups').select('name').orderBy('name').execute()).map((r) => r.name);
  }

  /** Every array-based group, by name. */
  async arrayGroups(): Promise<{ id: string; name: string; binding: ArrayBinding }[]> {
    const rows = await this.#db
      .selectFrom('protection_groups')
      .select(['id', 'name', 'array_binding'])
      .where('array_binding', 'is not', null)
      .orderBy('name')
      .execute();
    return rows.flatMap((r) =>
      r.array_binding === null ? [] : [{ id: r.id, name: r.name, binding: arrayBindingColumn.decode(r.array_binding) }],
    );
  }

  async createArrayGroup(id: string, name: string, binding: ArrayBinding, now: string): Promise<void> {
    await this.#db
      .insertInto('protection_groups')
      .values({ id, name, created_at: now, array_binding: arrayBindingColumn.encode(binding) })
      .execute();
  }

  /** One transaction: the host-based group and its members. */
  async createHostGroup(id: string, name: string, vmIds: string[], now: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx.insertInto('protection_groups').values({ id, name, created_at: now }).execute();
      await tx
        .insertInto('protection_group_vms')
        .values(vmIds.map((vmId) => ({ group_id: id, vm_id: vmId })))
        .execute();
    });
  }

  /** Adds a member; one already in is left as it is. */
  async addVm(groupId: string, vmId: string): Promise<void> {
    await this.#db
      .insertInto('protection_group_vms')
      .values({ group_id: groupId, vm_id: vmId })
      .onConflict((oc) => oc.doNothing())
      .execute();
  }

  async removeVm(groupId: string, vmId: string): Promise<void> {
    await this.#db
      .deleteFrom('protection_group_vms')
      .where('group_id', '=', groupId)
      .where('vm_id', '=', vmId)
      .execute();
  }

  /** Deletes the group (its memberships go with it, by the foreign key). */
  async delete(id: string): Promise<void> {
    await this.#db.deleteFrom('protection_groups').where('id', '=', id).execute();
  }

  /** A host-based group's members by VM name, with the site each replicates to (null: not replicated). */
  async members(groupId: string): Promise<{ vm: string; peer: string | null }[]> {
    return this.#db
      .selectFrom('protection_group_vms')
      .innerJoin('vms', 'vms.id', 'protection_group_vms.vm_id')
      .leftJoin('replications', 'replications.vm_id', 'vms.id')
      .select(['vms.name as vm', 'replications.peer as peer'])
      .where('protection_group_vms.group_id', '=', groupId)
      .orderBy('vms.name')
      .execute();
  }

  /** The group a VM is a member of (a VM is in at most one), if any. */
  async groupOfVm(vmId: string): Promise<{ id: string; name: string } | undefined> {
    return this.#db
      .selectFrom('protection_group_vms')
      .innerJoin('protection_groups', 'protection_groups.id', 'protection_group_vms.group_id')
      .select(['protection_groups.name as name', 'protection_groups.id as id'])
      .where('protection_group_vms.vm_id', '=', vmId)
      .executeTakeFirst();
  }

  async groupNameOfVm(vmId: string): Promise<string | undefined> {
    return (await this.groupOfVm(vmId))?.name;
  }

  /** An array-based group's binding and last syncs (null state: none yet); undefined for a host-based or missing group. */
  async arraySync(name: string): Promise<{ binding: ArrayBinding; state: ArraySyncState | null } | undefined> {
    const r = await this.#db
      .selectFrom('protection_groups')
      .select(['array_binding', 'array_sync'])
      .where('name', '=', name)
      .executeTakeFirst();
    if (!r || r.array_binding === null) return undefined;
    return {
      binding: arrayBindingColumn.decode(r.array_binding),
      state: r.array_sync === null ? null : arraySyncColumn.decode(r.array_sync),
    };
  }

  async setArraySync(name: string, state: ArraySyncState): Promise<void> {
    await this.#db
      .updateTable('protection_groups')
      .set({ array_sync: arraySyncColumn.encode(state) })
      .where('name', '=', name)
      .execute();
  }
}

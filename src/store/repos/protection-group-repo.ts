import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { MamoriError } from '../../core/mamori-error.js';
import { uniqueViolation } from '../unique-violation.js';
import { writeLock } from '../write-lock.js';
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

  /**
   * Creates an array-based group. `assertFree` sees the other array groups' bindings as they
   * are at commit and throws to refuse (a device is in at most one group): the look-up and the
   * insert hold one named lock, so two groups created at once cannot both take a device.
   */
  async createArrayGroup(
    id: string,
    name: string,
    binding: ArrayBinding,
    now: string,
    assertFree: (others: { name: string; binding: ArrayBinding }[]) => void,
  ): Promise<void> {
    await this.#refuseTaken(name, [], async () => {
      await this.#db.transaction().execute(async (tx) => {
        await writeLock(tx, 'protection_groups.array');
        // SQLite: the write lock before the read (writeLock is PostgreSQL's).
        await touchGroup(tx, id);
        const rows = await tx
          .selectFrom('protection_groups')
          .select(['name', 'array_binding'])
          .where('array_binding', 'is not', null)
          .execute();
        assertFree(
          rows.flatMap((r) =>
            r.array_binding === null ? [] : [{ name: r.name, binding: arrayBindingColumn.decode(r.array_binding) }],
          ),
        );
        await tx
          .insertInto('protection_groups')
          .values({ id, name, created_at: now, array_binding: arrayBindingColumn.encode(binding) })
          .execute();
      });
    });
  }

  /**
   * One transaction: the host-based group and its members. The unique keys decide what two
   * requests at once may not both do: a taken name is GROUP_EXISTS, a VM another group took
   * meanwhile VM_ALREADY_PROTECTED (the service's look-ups before only give the early answer).
   */
  async createHostGroup(id: string, name: string, vmIds: string[], now: string): Promise<void> {
    await this.#refuseTaken(name, vmIds, async () => {
      await this.#db.transaction().execute(async (tx) => {
        await tx.insertInto('protection_groups').values({ id, name, created_at: now }).execute();
        await tx
          .insertInto('protection_group_vms')
          .values(vmIds.map((vmId) => ({ group_id: id, vm_id: vmId })))
          .execute();
      });
    });
  }

  /**
   * Adds a member; one already in is left as it is. A VM in another group (taken meanwhile) is
   * VM_ALREADY_PROTECTED, a group deleted meanwhile GROUP_NOT_FOUND: the group's row is locked
   * first, so a delete waits for the add or the add sees the delete.
   */
  async addVm(groupId: string, vmId: string): Promise<void> {
    await this.#refuseTaken(null, [vmId], async () => {
      await this.#db.transaction().execute(async (tx) => {
        if (!(await touchGroup(tx, groupId)))
          throw new MamoriError(
            'GROUP_NOT_FOUND',
            'the protection group was deleted meanwhile; see mamori group list',
            {
              details: { group: groupId },
            },
          );
        await tx
          .insertInto('protection_group_vms')
          .values({ group_id: groupId, vm_id: vmId })
          .onConflict((oc) => oc.columns(['group_id', 'vm_id']).doNothing())
          .execute();
      });
    });
  }

  /**
   * Removes a member, unless it is the group's last (a host-based group has at least one VM):
   * the count and the delete hold the group row's lock, so two removes at once cannot empty it.
   * False when the VM was not a member.
   */
  async removeVm(groupId: string, vmId: string): Promise<boolean> {
    return this.#db.transaction().execute(async (tx) => {
      await touchGroup(tx, groupId);
      const members = await tx
        .selectFrom('protection_group_vms')
        .select('vm_id')
        .where('group_id', '=', groupId)
        .execute();
      if (!members.some((m) => m.vm_id === vmId)) return false;
      if (members.length <= 1)
        throw new MamoriError(
          'INVALID_INPUT',
          'the VM is the last of its protection group (the others were removed meanwhile); delete the group instead',
          { details: { group: groupId } },
        );
      await tx.deleteFrom('protection_group_vms').where('group_id', '=', groupId).where('vm_id', '=', vmId).execute();
      return true;
    });
  }

  /** Runs `write`, turning the unique keys it breaks into the errors a person can act on. */
  async #refuseTaken(name: string | null, vmIds: string[], write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (e) {
      const key = uniqueViolation(e);
      if (key === 'protection_groups.name' && name !== null)
        throw new MamoriError('GROUP_EXISTS', `a protection group named ${name} exists; pick another name`, {
          details: { group: name },
        });
      if (key === 'protection_group_vms.vm_id') {
        for (const vmId of vmIds) {
          const other = await this.groupOfVm(vmId);
          if (other)
            throw new MamoriError(
              'VM_ALREADY_PROTECTED',
              `a VM was put in protection group ${other.name} meanwhile; a VM is in at most one group`,
              { details: { vmId, group: other.name } },
            );
        }
      }
      throw e;
    }
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

  /** Every grouped VM's group name, by VM id (one query: continuous replication looks each second). */
  async groupNamesByVm(): Promise<Map<string, string>> {
    const rows = await this.#db
      .selectFrom('protection_group_vms')
      .innerJoin('protection_groups', 'protection_groups.id', 'protection_group_vms.group_id')
      .select(['protection_group_vms.vm_id as vmId', 'protection_groups.name as name'])
      .execute();
    return new Map(rows.map((r) => [r.vmId, r.name]));
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

/**
 * A no-op update of the group's row: takes its row lock on PostgreSQL (SQLite's write lock)
 * so the reads after it in `tx` see what no other writer changes before this one commits.
 * False when there is no such row.
 */
async function touchGroup(tx: Transaction<Database>, id: string): Promise<boolean> {
  const r = await tx
    .updateTable('protection_groups')
    .set((eb) => ({ name: eb.ref('name') }))
    .where('id', '=', id)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';

/** Protection groups (recovery plans) and their member VMs. */
export class ProtectionGroupRepo {
  #db: Kysely<Database>;
  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  /** The group a VM is a member of (a VM is in at most one), if any. */
  async groupOfVm(vmId: string): Promise<{ id: string; name: string } | undefined> {
    return this.#db.selectFrom('protection_group_vms').innerJoin('protection_groups', 'protection_groups.id', 'protection_group_vms.group_id')
      .select(['protection_groups.name as name', 'protection_groups.id as id']).where('protection_group_vms.vm_id', '=', vmId).executeTakeFirst();
  }

  async groupNameOfVm(vmId: string): Promise<string | undefined> {
    return (await this.groupOfVm(vmId))?.name;
  }
}

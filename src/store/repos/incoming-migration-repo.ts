import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { VmDefinition } from '../records/vm-definition.js';
import type { DiskRecord } from '../records/disk-record.js';
import { VmRepo } from './vm-repo.js';
import { DiskRepo } from './disk-repo.js';
import { ReplicaRepo } from './replica-repo.js';

/** The state_reason of a VM made for an incoming live migration until it is activated. */
export const INCOMING_REASON = 'incoming migration';

/**
 * Incoming live migrations at the destination: a row per VM made for one and not yet
 * activated (it outlives a half-made VM, so a restart finds and removes it).
 */
export class IncomingMigrationRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  /** Written first, before any file or VM row: a second call for the same VM keeps the first. */
  async begin(vmId: string, sourceSite: string, now: string): Promise<void> {
    await this.#db
      .insertInto('incoming_migrations')
      .values({ vm_id: vmId, source_site: sourceSite, created_at: now })
      .onConflict((oc) => oc.column('vm_id').doNothing())
      .execute();
  }

  async end(vmId: string): Promise<void> {
    await this.#db.deleteFrom('incoming_migrations').where('vm_id', '=', vmId).execute();
  }

  /** The source site of a pending incoming migration; undefined when none is pending for the VM. */
  async sourceOf(vmId: string): Promise<string | undefined> {
    return (
      await this.#db
        .selectFrom('incoming_migrations')
        .select('source_site')
        .where('vm_id', '=', vmId)
        .executeTakeFirst()
    )?.source_site;
  }

  async pendingVmIds(): Promise<string[]> {
    return (await this.#db.selectFrom('incoming_migrations').select('vm_id').execute()).map((r) => r.vm_id);
  }

  /**
   * One transaction: the incoming VM (stopped, its reason saying why), its disks, and when it
   * sits on a replica point, the hold that keeps retention off that point.
   */
  async createVm(
    def: VmDefinition,
    disks: DiskRecord[],
    now: string,
    hold: { replicaId: string; pointId: string } | null,
  ): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await VmRepo.insert(tx, def, now, INCOMING_REASON);
      for (const d of disks) await DiskRepo.insert(tx, d);
      if (hold !== null)
        await ReplicaRepo.insertHold(tx, {
          replicaId: hold.replicaId,
          holder: `vm:${def.id}`,
          pointId: hold.pointId,
          createdAt: now,
        });
    });
  }

  /**
   * Whether this site has the network (networks table). A read for the migration's checks:
   * on merge it belongs with the networks repository (owned by the networks/ change).
   */
  async networkExists(name: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('networks').select('name').where('name', '=', name).executeTakeFirst()) !== undefined
    );
  }
}

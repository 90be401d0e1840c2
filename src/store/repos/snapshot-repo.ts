import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { newShortId } from '../../core/ids.js';
import { diskOverlaysColumn } from './disk-repo.js';

export interface SnapshotRow {
  id: string;
  vmId: string;
  name: string;
  createdAt: string;
  /** Taken from a running VM (crash-consistent across all its disks). */
  running: boolean;
}

/** The snapshots table, and the disks' overlay lists that snapshots add to and take from. */
export class SnapshotRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async forVm(vmId: string): Promise<SnapshotRow[]> {
    const rows = await this.#db
      .selectFrom('snapshots')
      .selectAll()
      .where('vm_id', '=', vmId)
      .orderBy('created_at')
      .execute();
    return rows.map((r) => ({
      id: r.id,
      vmId: r.vm_id,
      name: r.name,
      createdAt: r.created_at,
      running: r.running === 1,
    }));
  }

  async findId(vmId: string, name: string): Promise<string | undefined> {
    return (
      await this.#db
        .selectFrom('snapshots')
        .select('id')
        .where('vm_id', '=', vmId)
        .where('name', '=', name)
        .executeTakeFirst()
    )?.id;
  }

  /** One transaction: the snapshot's row and each disk's new overlay list (the guest already writes into them). */
  async record(
    vmId: string,
    name: string,
    createdAt: string,
    running: boolean,
    overlays: { diskId: string; overlays: string[] }[],
  ): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx
        .insertInto('snapshots')
        .values({ id: newShortId('snap'), vm_id: vmId, name, created_at: createdAt, running: running ? 1 : 0 })
        .execute();
      for (const o of overlays)
        await tx
          .updateTable('disks')
          .set({ overlays: diskOverlaysColumn.encode(o.overlays) })
          .where('id', '=', o.diskId)
          .execute();
    });
  }

  async delete(id: string): Promise<void> {
    await this.#db.deleteFrom('snapshots').where('id', '=', id).execute();
  }
}

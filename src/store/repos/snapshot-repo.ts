import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { newShortId } from '../../core/ids.js';
import { diskOverlaysColumn } from './disk-repo.js';
import { uniqueViolation } from '../unique-violation.js';
import { MamoriError } from '../../core/mamori-error.js';

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

  /**
   * One transaction: the snapshot's row and, on each disk, its new overlay put on top of the
   * layers it was made on (the guest may already write into it). Compare-and-set: each disk's
   * list is read under its row's lock (the insert takes SQLite's write lock, the no-op update
   * PostgreSQL's row lock) and must still be `below`, else another snapshot was taken or
   * deleted meanwhile (another server on the same database) and nothing is recorded
   * (VM_DISKS_CHANGED). A name the VM has already is SNAPSHOT_EXISTS: the unique key decides.
   */
  async record(
    vmId: string,
    name: string,
    createdAt: string,
    running: boolean,
    added: { diskId: string; below: readonly string[]; overlay: string }[],
  ): Promise<void> {
    try {
      await this.#db.transaction().execute(async (tx) => {
        await tx
          .insertInto('snapshots')
          .values({ id: newShortId('snap'), vm_id: vmId, name, created_at: createdAt, running: running ? 1 : 0 })
          .execute();
        for (const a of added)
          await updateOverlays(tx, a.diskId, (overlays) => {
            if (overlays.length !== a.below.length || overlays.some((o, i) => o !== a.below[i]))
              throw new MamoriError(
                'VM_DISKS_CHANGED',
                `the layers of the VM's disks changed while snapshot ${name} was taken (another request or server); nothing was kept, try again`,
                { details: { snapshot: name, disk: a.diskId } },
              );
            return [...overlays, a.overlay];
          });
      });
    } catch (e) {
      if (uniqueViolation(e) === 'snapshots.vm_id')
        throw new MamoriError('SNAPSHOT_EXISTS', `the VM already has a snapshot named ${name}; choose another name`, {
          details: { snapshot: name },
        });
      throw e;
    }
  }

  /**
   * Takes one overlay out of a disk's list as the list is at commit (a snapshot delete's
   * step), under the disk row's lock, so a snapshot recorded meanwhile keeps its overlay.
   */
  async removeOverlay(diskId: string, overlay: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await updateOverlays(tx, diskId, (overlays) => overlays.filter((o) => o !== overlay));
    });
  }

  async delete(id: string): Promise<void> {
    await this.#db.deleteFrom('snapshots').where('id', '=', id).execute();
  }
}

/**
 * Read-modify-write of one disk's overlay list in `tx`. The no-op update first takes the
 * row's lock on PostgreSQL (and SQLite's write lock), so the read sees the last committed
 * list and no other writer can change it before this one commits.
 */
async function updateOverlays(
  tx: Transaction<Database>,
  diskId: string,
  change: (overlays: string[]) => string[],
): Promise<void> {
  await tx
    .updateTable('disks')
    .set((eb) => ({ overlays: eb.ref('overlays') }))
    .where('id', '=', diskId)
    .execute();
  const row = await tx.selectFrom('disks').select('overlays').where('id', '=', diskId).executeTakeFirst();
  if (!row) return;
  await tx
    .updateTable('disks')
    .set({ overlays: diskOverlaysColumn.encode(change(diskOverlaysColumn.decode(row.overlays))) })
    .where('id', '=', diskId)
    .execute();
}

import type { Kysely, Selectable } from 'kysely';
import type { Database, PoolDesktopTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { DiskRepo } from './disk-repo.js';
import { poolReplicaFilesColumn, poolSpecColumn, type PoolSpec } from './pool-records.js';

/** A pool_desktops row: a desktop of a pool, the replica its clones sit on, who uses it. */
export interface PoolDesktopRecord {
  vmId: string;
  pool: string;
  number: number;
  replicaId: string;
  state: string;
  message: string | null;
  /** The operation kind that still has to do this desktop, else null. */
  pending: string | null;
  assignedUser: string | null;
  sessionUser: string | null;
  sessionSince: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A new desktop as provisioning writes it: its VM row, its disks and its pool row. */
export interface NewDesktop {
  vm: { id: string; definition: { name: string } };
  disks: Parameters<typeof DiskRepo.insert>[1][];
  number: number;
  replicaId: string;
}

/** The desktops of desktop pools (pool_desktops), with what they need of their VMs and replicas. */
export class PoolDesktopRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async find(vmId: string): Promise<PoolDesktopRecord | undefined> {
    const r = await this.#db.selectFrom('pool_desktops').selectAll().where('vm_id', '=', vmId).executeTakeFirst();
    return r && toDesktop(r);
  }

  /** The pool's desktops, by number. */
  async listOf(pool: string): Promise<PoolDesktopRecord[]> {
    return (
      await this.#db.selectFrom('pool_desktops').selectAll().where('pool', '=', pool).orderBy('number').execute()
    ).map(toDesktop);
  }

  async countOf(pool: string): Promise<number> {
    const n = await this.#db
      .selectFrom('pool_desktops')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('pool', '=', pool)
      .executeTakeFirst();
    return Number(n?.n ?? 0);
  }

  async numbersOf(pool: string): Promise<number[]> {
    return (await this.#db.selectFrom('pool_desktops').select('number').where('pool', '=', pool).execute()).map(
      (r) => r.number,
    );
  }

  /** The pool's desktops with their VM names, by number. */
  async desktopsOf(pool: string): Promise<{ vmId: string; replicaId: string; number: number; name: string }[]> {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .innerJoin('vms', 'vms.id', 'pool_desktops.vm_id')
        .select(['pool_desktops.vm_id', 'pool_desktops.replica_id', 'pool_desktops.number', 'vms.name'])
        .where('pool_desktops.pool', '=', pool)
        .orderBy('number')
        .execute()
    ).map((r) => ({ vmId: r.vm_id, replicaId: r.replica_id, number: r.number, name: r.name }));
  }

  /** Desktops numbered above `number` (what shrinking to it removes), with their VM names and users, by number. */
  async desktopsAbove(
    pool: string,
    number: number,
  ): Promise<{ vmId: string; name: string; assignedUser: string | null; sessionUser: string | null }[]> {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .innerJoin('vms', 'vms.id', 'pool_desktops.vm_id')
        .select(['pool_desktops.vm_id', 'vms.name', 'pool_desktops.assigned_user', 'pool_desktops.session_user'])
        .where('pool_desktops.pool', '=', pool)
        .where('pool_desktops.number', '>', number)
        .orderBy('number')
        .execute()
    ).map((r) => ({ vmId: r.vm_id, name: r.name, assignedUser: r.assigned_user, sessionUser: r.session_user }));
  }

  /** The VM ids of the desktops numbered above `number`, whether or not their VM rows are still there (a cut delete). */
  async vmIdsAbove(pool: string, number: number): Promise<string[]> {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .select('vm_id')
        .where('pool', '=', pool)
        .where('number', '>', number)
        .execute()
    ).map((r) => r.vm_id);
  }

  /** Desktops whose replica is not of this snapshot (a recompose's to-do). */
  async notOnSnapshot(pool: string, snapshot: string): Promise<string[]> {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
        .select('pool_desktops.vm_id')
        .where('pool_desktops.pool', '=', pool)
        .where('pool_replicas.snapshot', '!=', snapshot)
        .execute()
    ).map((r) => r.vm_id);
  }

  /** Desktops an operation of this kind still has to do, by number. */
  async pendingFor(pool: string, kind: string): Promise<{ vmId: string; replicaId: string }[]> {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .select(['vm_id', 'replica_id'])
        .where('pool', '=', pool)
        .where('pending', '=', kind)
        .orderBy('number')
        .execute()
    ).map((r) => ({ vmId: r.vm_id, replicaId: r.replica_id }));
  }

  /** Each desktop with the storage pool it is in (its replica's), by number. */
  async placements(pool: string): Promise<{ vmId: string; number: number; storage: string }[]> {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
        .select(['pool_desktops.vm_id', 'pool_desktops.number', 'pool_replicas.storage'])
        .where('pool_desktops.pool', '=', pool)
        .orderBy('number')
        .execute()
    ).map((r) => ({ vmId: r.vm_id, number: r.number, storage: r.storage }));
  }

  /** Each desktop's VM name and storage pool: where its folder belongs. */
  async folders(pool: string): Promise<{ name: string; storage: string }[]> {
    return this.#db
      .selectFrom('pool_desktops')
      .innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
      .innerJoin('vms', 'vms.id', 'pool_desktops.vm_id')
      .select(['vms.name', 'pool_replicas.storage'])
      .where('pool_desktops.pool', '=', pool)
      .execute();
  }

  /** Each desktop's VM name and power state, its users and pending mark, by number (the spares' view). */
  async powerStates(
    pool: string,
  ): Promise<
    { name: string; state: string; assignedUser: string | null; sessionUser: string | null; pending: string | null }[]
  > {
    return (
      await this.#db
        .selectFrom('pool_desktops')
        .innerJoin('vms', 'vms.id', 'pool_desktops.vm_id')
        .select([
          'vms.name',
          'vms.state',
          'pool_desktops.assigned_user',
          'pool_desktops.session_user',
          'pool_desktops.pending',
        ])
        .where('pool_desktops.pool', '=', pool)
        .orderBy('number')
        .execute()
    ).map((r) => ({
      name: r.name,
      state: r.state,
      assignedUser: r.assigned_user,
      sessionUser: r.session_user,
      pending: r.pending,
    }));
  }

  /** For a VM that is a desktop: its pool, the pool's spec and its replica's storage pool and files. */
  async context(vmId: string): Promise<{ pool: string; spec: PoolSpec; storage: string; files: string[] } | undefined> {
    const row = await this.#db
      .selectFrom('pool_desktops')
      .innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
      .innerJoin('desktop_pools', 'desktop_pools.name', 'pool_desktops.pool')
      .select(['pool_desktops.pool', 'pool_replicas.storage', 'pool_replicas.files', 'desktop_pools.spec'])
      .where('pool_desktops.vm_id', '=', vmId)
      .executeTakeFirst();
    return (
      row && {
        pool: row.pool,
        spec: poolSpecColumn.decode(row.spec),
        storage: row.storage,
        files: poolReplicaFilesColumn.decode(row.files),
      }
    );
  }

  async setAssignedUser(vmId: string, user: string | null, at: string): Promise<void> {
    await this.#db
      .updateTable('pool_desktops')
      .set({ assigned_user: user, updated_at: at })
      .where('vm_id', '=', vmId)
      .execute();
  }

  async setSession(vmId: string, session: { user: string; since: string } | null, at: string): Promise<void> {
    await this.#db
      .updateTable('pool_desktops')
      .set({ session_user: session?.user ?? null, session_since: session?.since ?? null, updated_at: at })
      .where('vm_id', '=', vmId)
      .execute();
  }

  /** A desktop that powered off has no session (the broker may not have said so). */
  async endSessionAtPowerOff(vmId: string): Promise<void> {
    await this.#db
      .updateTable('pool_desktops')
      .set({ session_user: null, session_since: null })
      .where('vm_id', '=', vmId)
      .where('session_user', 'is not', null)
      .execute();
  }

  async clearPending(vmId: string): Promise<void> {
    await this.#db.updateTable('pool_desktops').set({ pending: null }).where('vm_id', '=', vmId).execute();
  }

  /** A desktop rebuilt on a replica: provisioned again, its pending mark cleared. */
  async rebuilt(vmId: string, replicaId: string, at: string): Promise<void> {
    await this.#db
      .updateTable('pool_desktops')
      .set({ replica_id: replicaId, state: 'provisioned', message: null, pending: null, updated_at: at })
      .where('vm_id', '=', vmId)
      .execute();
  }

  async delete(vmId: string): Promise<void> {
    await this.#db.deleteFrom('pool_desktops').where('vm_id', '=', vmId).execute();
  }

  /**
   * A batch of new desktops, in one transaction: each one's VM row, its disks and its pool
   * row. The caller has written and synced their files first, so a row never names a file a
   * power cut could lose.
   */
  async add(pool: string, desktops: NewDesktop[], at: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      for (const d of desktops) {
        // TODO(issue 20): the vms.definition codec is VmRepo's (store/repos/vm-repo.ts); use it once it has one.
        await tx
          .insertInto('vms')
          .values({
            id: d.vm.id,
            name: d.vm.definition.name,
            definition: JSON.stringify(d.vm.definition),
            state: 'stopped',
            state_reason: null,
            pid: null,
            last_heartbeat_at: null,
            created_at: at,
            updated_at: at,
          })
          .execute();
        for (const disk of d.disks) await DiskRepo.insert(tx, disk);
        await tx
          .insertInto('pool_desktops')
          .values({
            vm_id: d.vm.id,
            pool,
            number: d.number,
            replica_id: d.replicaId,
            state: 'provisioned',
            message: null,
            pending: null,
            assigned_user: null,
            session_user: null,
            session_since: null,
            created_at: at,
            updated_at: at,
          })
          .execute();
      }
    });
  }

  /**
   * A desktop moved to another storage pool: its disk rows (renamed: old path -> new) and its
   * replica, in one transaction. The caller moved the files first: before this the desktop is
   * where it was (a rerun moves what is left), after it the desktop is where it went.
   */
  async moved(
    vmId: string,
    to: { storage: string; replicaId: string; renamed: Iterable<[string, string]> },
    at: string,
  ): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      for (const [old, now] of to.renamed)
        await tx.updateTable('disks').set({ path: now, pool: to.storage }).where('path', '=', old).execute();
      await tx
        .updateTable('pool_desktops')
        .set({ replica_id: to.replicaId, updated_at: at })
        .where('vm_id', '=', vmId)
        .execute();
    });
  }
}

function toDesktop(r: Selectable<PoolDesktopTable>): PoolDesktopRecord {
  return {
    vmId: r.vm_id,
    pool: r.pool,
    number: r.number,
    replicaId: r.replica_id,
    state: r.state,
    message: r.message,
    pending: r.pending,
    assignedUser: r.assigned_user,
    sessionUser: r.session_user,
    sessionSince: r.session_since,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

import { writeLock } from '../write-lock.js';
import type { Kysely, Selectable } from 'kysely';
import type { Database, DesktopPoolTable, PoolReplicaTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import {
  poolOperationColumn,
  poolReplicaFilesColumn,
  poolSpecColumn,
  type PoolOperation,
  type PoolSpec,
} from './pool-records.js';

/** A desktop_pools row, decoded. */
export interface PoolRecord {
  name: string;
  spec: PoolSpec;
  state: string;
  message: string | null;
  /** The operation under way or cut; null once it ended well. */
  operation: PoolOperation | null;
  createdAt: string;
  updatedAt: string;
}

/** A pool_replicas row: a master snapshot flattened (or linked) into one storage pool. */
export interface PoolReplicaRecord {
  id: string;
  pool: string;
  storage: string;
  snapshot: string;
  files: string[];
  sizeBytes: number;
  createdAt: string;
}

/**
 * Desktop pools (pools/): the desktop_pools rows with their operations, their replicas
 * (pool_replicas) and the static addresses their desktops hold (pool_addresses). The desktops
 * themselves are in pool-desktop-repo.ts.
 */
export class DesktopPoolRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async list(): Promise<PoolRecord[]> {
    return (await this.#db.selectFrom('desktop_pools').selectAll().orderBy('name').execute()).map(toPool);
  }

  async names(): Promise<string[]> {
    return (await this.#db.selectFrom('desktop_pools').select('name').execute()).map((r) => r.name);
  }

  async find(name: string): Promise<PoolRecord | undefined> {
    const r = await this.#db.selectFrom('desktop_pools').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toPool(r);
  }

  async exists(name: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('desktop_pools').select('name').where('name', '=', name).executeTakeFirst()) !==
      undefined
    );
  }

  /** Pools not in error, with their recorded operation (only that column decoded: what start-up resumes). */
  async notFailed(): Promise<{ name: string; state: string; operation: PoolOperation | null }[]> {
    const rows = await this.#db
      .selectFrom('desktop_pools')
      .select(['name', 'state', 'operation'])
      .where('state', '!=', 'error')
      .execute();
    return rows.map((r) => ({
      name: r.name,
      state: r.state,
      operation: r.operation === null ? null : poolOperationColumn.decode(r.operation),
    }));
  }

  async insert(p: {
    name: string;
    spec: PoolSpec;
    state: string;
    operation: PoolOperation;
    at: string;
  }): Promise<void> {
    await this.#db
      .insertInto('desktop_pools')
      .values({
        name: p.name,
        spec: poolSpecColumn.encode(p.spec),
        state: p.state,
        message: null,
        operation: poolOperationColumn.encode(p.operation),
        created_at: p.at,
        updated_at: p.at,
      })
      .execute();
  }

  async setSpec(name: string, spec: PoolSpec, at: string): Promise<void> {
    await this.#db
      .updateTable('desktop_pools')
      .set({ spec: poolSpecColumn.encode(spec), updated_at: at })
      .where('name', '=', name)
      .execute();
  }

  /** What the pool tells about itself (a spare that did not start, ...), leaving its state. */
  async setMessage(name: string, message: string): Promise<void> {
    await this.#db.updateTable('desktop_pools').set({ message }).where('name', '=', name).execute();
  }

  /**
   * Records an operation before it starts, in one transaction: the pool's state and operation
   * (and the spec it changes), and the desktops it has to do marked pending (every other mark
   * of the pool cleared), so a cut run resumes with exactly the desktops it had not done.
   */
  async startOperation(
    name: string,
    o: { state: string; operation: PoolOperation; spec?: PoolSpec; pending?: string[]; at: string },
  ): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx
        .updateTable('desktop_pools')
        .set({
          state: o.state,
          message: null,
          operation: poolOperationColumn.encode(o.operation),
          updated_at: o.at,
          ...(o.spec ? { spec: poolSpecColumn.encode(o.spec) } : {}),
        })
        .where('name', '=', name)
        .execute();
      if (o.pending) {
        await tx.updateTable('pool_desktops').set({ pending: null }).where('pool', '=', name).execute();
        if (o.pending.length > 0)
          await tx
            .updateTable('pool_desktops')
            .set({ pending: o.operation.kind })
            .where('vm_id', 'in', o.pending)
            .execute();
      }
    });
  }

  /** The operation ended well: the pool is ready and its record cleared. */
  async operationEnded(name: string, message: string | null, at: string): Promise<void> {
    await this.#db
      .updateTable('desktop_pools')
      .set({ state: 'ready', operation: null, updated_at: at, message })
      .where('name', '=', name)
      .execute();
  }

  /** The operation failed: its record stays (for `pool resume`), the pool says why. */
  async operationFailed(name: string, message: string, at: string): Promise<void> {
    await this.#db
      .updateTable('desktop_pools')
      .set({ state: 'error', message, updated_at: at })
      .where('name', '=', name)
      .execute();
  }

  /** A server stop cut the operation (a pool in error stays so). */
  async markInterrupted(name: string, message: string, at: string): Promise<void> {
    await this.#db
      .updateTable('desktop_pools')
      .set({ state: 'interrupted', message, updated_at: at })
      .where('name', '=', name)
      .where('state', '!=', 'error')
      .execute();
  }

  /** The last rows of a deleted pool: its address reservations, then the pool. */
  async deletePool(name: string): Promise<void> {
    await this.#db.deleteFrom('pool_addresses').where('pool', '=', name).execute();
    await this.#db.deleteFrom('desktop_pools').where('name', '=', name).execute();
  }

  /** Whether the VM (a pool's master) has this snapshot. (A read of the snapshots table, which is the VMs' own.) */
  async snapshotExists(vmId: string, snapshot: string): Promise<boolean> {
    return (
      (await this.#db
        .selectFrom('snapshots')
        .select('name')
        .where('vm_id', '=', vmId)
        .where('name', '=', snapshot)
        .executeTakeFirst()) !== undefined
    );
  }

  // Replicas

  async replicasOf(pool: string): Promise<PoolReplicaRecord[]> {
    return (await this.#db.selectFrom('pool_replicas').selectAll().where('pool', '=', pool).execute()).map(toReplica);
  }

  async replica(id: string): Promise<PoolReplicaRecord | undefined> {
    const r = await this.#db.selectFrom('pool_replicas').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toReplica(r);
  }

  /** The pool's replica of this snapshot in this storage pool, if made. */
  async replicaFor(pool: string, storage: string, snapshot: string): Promise<PoolReplicaRecord | undefined> {
    const r = await this.#db
      .selectFrom('pool_replicas')
      .selectAll()
      .where('pool', '=', pool)
      .where('storage', '=', storage)
      .where('snapshot', '=', snapshot)
      .executeTakeFirst();
    return r && toReplica(r);
  }

  async replicaIdsIn(pool: string, storage: string): Promise<string[]> {
    return (
      await this.#db
        .selectFrom('pool_replicas')
        .select('id')
        .where('pool', '=', pool)
        .where('storage', '=', storage)
        .execute()
    ).map((r) => r.id);
  }

  async insertReplica(r: PoolReplicaRecord): Promise<void> {
    await this.#db
      .insertInto('pool_replicas')
      .values({
        id: r.id,
        pool: r.pool,
        storage: r.storage,
        snapshot: r.snapshot,
        files: poolReplicaFilesColumn.encode(r.files),
        size_bytes: r.sizeBytes,
        created_at: r.createdAt,
      })
      .execute();
  }

  /** Whether a desktop sits on the replica. */
  async replicaInUse(id: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('pool_desktops').select('vm_id').where('replica_id', '=', id).executeTakeFirst()) !==
      undefined
    );
  }

  async deleteReplica(id: string): Promise<void> {
    await this.#db.deleteFrom('pool_replicas').where('id', '=', id).execute();
  }

  // Static addresses

  /**
   * Reserves addresses for desktops, in one transaction with the look-up of those held:
   * `choose` picks from what is free (vm id -> address; a throw reserves none), and the
   * primary key refuses an address another transaction took, so two desktops never hold one.
   */
  async reserveAddresses(
    pool: string,
    choose: (held: ReadonlySet<string>) => Map<string, string>,
    at: string,
  ): Promise<Map<string, string>> {
    return this.#db.transaction().execute(async (tx) => {
      // Read, choose, then write: two provisionings on one range (two pools, or two servers on
      // PostgreSQL) must not both choose the same free address. SQLite's single writer orders
      // them already; on PostgreSQL the loser would fail on the primary key.
      await writeLock(tx, 'pool_addresses');
      const held = new Set((await tx.selectFrom('pool_addresses').select('address').execute()).map((r) => r.address));
      const chosen = choose(held);
      for (const [vmId, address] of chosen)
        await tx.insertInto('pool_addresses').values({ address, pool, vm_id: vmId, reserved_at: at }).execute();
      return chosen;
    });
  }

  /** The address each desktop of the pool holds (vm id -> address). */
  async addressesOf(pool: string): Promise<Map<string, string>> {
    return new Map(
      (await this.#db.selectFrom('pool_addresses').select(['vm_id', 'address']).where('pool', '=', pool).execute()).map(
        (a) => [a.vm_id, a.address],
      ),
    );
  }

  async freeAddresses(vmIds: string[]): Promise<void> {
    if (vmIds.length > 0) await this.#db.deleteFrom('pool_addresses').where('vm_id', 'in', vmIds).execute();
  }

  /** Reservations of the pool whose desktop has no row. */
  async freeStrayAddresses(pool: string): Promise<void> {
    await this.#db
      .deleteFrom('pool_addresses')
      .where('pool', '=', pool)
      .where('vm_id', 'not in', this.#db.selectFrom('pool_desktops').select('vm_id').where('pool', '=', pool))
      .execute();
  }
}

function toPool(r: Selectable<DesktopPoolTable>): PoolRecord {
  return {
    name: r.name,
    spec: poolSpecColumn.decode(r.spec),
    state: r.state,
    message: r.message,
    operation: r.operation === null ? null : poolOperationColumn.decode(r.operation),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function toReplica(r: Selectable<PoolReplicaTable>): PoolReplicaRecord {
  return {
    id: r.id,
    pool: r.pool,
    storage: r.storage,
    snapshot: r.snapshot,
    files: poolReplicaFilesColumn.decode(r.files),
    sizeBytes: r.size_bytes,
    createdAt: r.created_at,
  };
}

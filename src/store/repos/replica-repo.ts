import { PostgresAdapter, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { PointConsistency, ReplicaDiskSpec, ReplicaPointView, ReplicaView } from '../records/replica-record.js';
import { jsonColumn } from '../json-column.js';
import { MamoriError } from '../../core/mamori-error.js';

/** replicas.disks: each disk's index and virtual size, in disk order. */
export const replicaDisksColumn = jsonColumn<ReplicaDiskSpec[]>('replicas.disks', {
  type: 'array',
  items: {
    type: 'object',
    required: ['index', 'sizeBytes'],
    properties: { index: { type: 'integer' }, sizeBytes: { type: 'number' } },
  },
});

/** replica_points.disk_points: each disk chain's point id, in disk order. */
export const diskPointsColumn = jsonColumn<string[]>('replica_points.disk_points', {
  type: 'array',
  items: { type: 'string' },
});

/**
 * The recovery side of replication: replicas, their points, the holds that keep points from
 * retention, and the records of VMs made from them.
 */
export class ReplicaRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  /** The replica with its points, oldest first. */
  async get(id: string): Promise<ReplicaView | undefined> {
    const r = await this.#db.selectFrom('replicas').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) return undefined;
    const points = await this.#db
      .selectFrom('replica_points')
      .selectAll()
      .where('replica_id', '=', id)
      .orderBy('time')
      .execute();
    return {
      id: r.id,
      sourceSite: r.source_site,
      sourceVmId: r.source_vm_id,
      vmName: r.vm_name,
      disks: replicaDisksColumn.decode(r.disks),
      keepPoints: r.keep_points,
      failoverGeneration: r.failover_generation,
      promotedAt: r.promoted_at,
      lastContactAt: r.last_contact_at,
      points: points.map((p): ReplicaPointView => ({
        id: p.point_id,
        time: p.time,
        consistency: toConsistency(p.consistency),
        committedAt: p.committed_at,
      })),
    };
  }

  async ids(): Promise<string[]> {
    return (await this.#db.selectFrom('replicas').select('id').execute()).map((r) => r.id);
  }

  /** Every replica's disks (but `exceptId`'s), for walking their chains. */
  async disksOfAll(exceptId?: string): Promise<{ id: string; disks: ReplicaDiskSpec[] }[]> {
    let q = this.#db.selectFrom('replicas').select(['id', 'disks']);
    if (exceptId !== undefined) q = q.where('id', '!=', exceptId);
    return (await q.execute()).map((r) => ({ id: r.id, disks: replicaDisksColumn.decode(r.disks) }));
  }

  async disksOf(id: string): Promise<ReplicaDiskSpec[] | undefined> {
    const r = await this.#db.selectFrom('replicas').select('disks').where('id', '=', id).executeTakeFirst();
    return r && replicaDisksColumn.decode(r.disks);
  }

  async sourceVmIdOf(id: string): Promise<string | undefined> {
    return (await this.#db.selectFrom('replicas').select('source_vm_id').where('id', '=', id).executeTakeFirst())
      ?.source_vm_id;
  }

  /** The replica of a VM of `sourceSite`, with its promotion state. */
  async findBySource(
    sourceSite: string,
    sourceVmId: string,
  ): Promise<{ id: string; promotedAt: string | null; failoverGeneration: number } | undefined> {
    const r = await this.#db
      .selectFrom('replicas')
      .select(['id', 'promoted_at', 'failover_generation'])
      .where('source_site', '=', sourceSite)
      .where('source_vm_id', '=', sourceVmId)
      .executeTakeFirst();
    return r && { id: r.id, promotedAt: r.promoted_at, failoverGeneration: r.failover_generation };
  }

  /** Keeps a replica under another source id (a retired name), so a new replica can take the VM's place. */
  async renameSource(id: string, sourceVmId: string): Promise<void> {
    await this.#db.updateTable('replicas').set({ source_vm_id: sourceVmId }).where('id', '=', id).execute();
  }

  /**
   * One transaction, when a superseded VM's disks become a replica's seed: a recovered VM's
   * hold passes to the replica, and the VM's disk rows (seed disks and any other) and its row go.
   */
  async takeOverSeedVm(replicaId: string, vmId: string, seedDiskIds: string[]): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx
        .updateTable('replica_holds')
        .set({ holder: `replica:${replicaId}` })
        .where('holder', '=', `vm:${vmId}`)
        .execute();
      if (seedDiskIds.length > 0) await tx.deleteFrom('disks').where('id', 'in', seedDiskIds).execute();
      await tx.deleteFrom('disks').where('vm_id', '=', vmId).execute();
      await tx.deleteFrom('vms').where('id', '=', vmId).execute();
    });
  }

  async findIdBySource(sourceSite: string, sourceVmId: string): Promise<string | undefined> {
    return (
      await this.#db
        .selectFrom('replicas')
        .select('id')
        .where('source_site', '=', sourceSite)
        .where('source_vm_id', '=', sourceVmId)
        .executeTakeFirst()
    )?.id;
  }

  async insert(r: {
    id: string;
    sourceSite: string;
    sourceVmId: string;
    vmName: string;
    disks: ReplicaDiskSpec[];
    keepPoints: number;
    createdAt: string;
  }): Promise<void> {
    await this.#db
      .insertInto('replicas')
      .values({
        id: r.id,
        source_site: r.sourceSite,
        source_vm_id: r.sourceVmId,
        vm_name: r.vmName,
        disks: replicaDisksColumn.encode(r.disks),
        keep_points: r.keepPoints,
        created_at: r.createdAt,
      })
      .execute();
  }

  async setKeepPoints(id: string, keepPoints: number): Promise<void> {
    await this.#db.updateTable('replicas').set({ keep_points: keepPoints }).where('id', '=', id).execute();
  }

  /** The source opened a cycle: its VM was up then. */
  async touchContact(id: string, at: string): Promise<void> {
    await this.#db.updateTable('replicas').set({ last_contact_at: at }).where('id', '=', id).execute();
  }

  async setPromoted(id: string, promotedAt: string, failoverGeneration: number): Promise<void> {
    await this.#db
      .updateTable('replicas')
      .set({ promoted_at: promotedAt, failover_generation: failoverGeneration })
      .where('id', '=', id)
      .execute();
  }

  /** Records a committed point: from now on it is a recovery point of the VM. */
  async addPoint(
    id: string,
    p: { pointId: string; time: string; consistency: PointConsistency; committedAt: string; diskPoints: string[] },
  ): Promise<void> {
    await this.#db
      .insertInto('replica_points')
      .values({
        replica_id: id,
        point_id: p.pointId,
        time: p.time,
        consistency: p.consistency,
        committed_at: p.committedAt,
        disk_points: diskPointsColumn.encode(p.diskPoints),
      })
      .execute();
  }

  /** Each disk chain's point id of a recorded point; undefined when it is not recorded. */
  async diskPointsOf(id: string, pointId: string): Promise<string[] | undefined> {
    const r = await this.#db
      .selectFrom('replica_points')
      .select('disk_points')
      .where('replica_id', '=', id)
      .where('point_id', '=', pointId)
      .executeTakeFirst();
    return r && diskPointsColumn.decode(r.disk_points);
  }

  /** Every recorded point's disk points. */
  async allDiskPoints(id: string): Promise<string[][]> {
    return (
      await this.#db.selectFrom('replica_points').select('disk_points').where('replica_id', '=', id).execute()
    ).map((r) => diskPointsColumn.decode(r.disk_points));
  }

  /** Drops the oldest point rows beyond the newest `keep`. */
  async keepNewestPoints(id: string, keep: number): Promise<void> {
    const rows = await this.#db
      .selectFrom('replica_points')
      .select('point_id')
      .where('replica_id', '=', id)
      .orderBy('time')
      .execute();
    const drop = rows.slice(0, Math.max(0, rows.length - keep)).map((r) => r.point_id);
    if (drop.length)
      await this.#db.deleteFrom('replica_points').where('replica_id', '=', id).where('point_id', 'in', drop).execute();
  }

  /** Whether anything holds the replica's points (recovered VMs running on overlays over them). */
  async isHeld(id: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('replica_holds').select('holder').where('replica_id', '=', id).executeTakeFirst()) !==
      undefined
    );
  }

  /** The replica whose point a VM holds (a VM made over a replica point), if any. */
  async replicaHeldByVm(vmId: string): Promise<string | undefined> {
    return (
      await this.#db
        .selectFrom('replica_holds')
        .select('replica_id')
        .where('holder', '=', `vm:${vmId}`)
        .executeTakeFirst()
    )?.replica_id;
  }

  /** The replica and point a VM's disks sit on (a VM made over a replica point: recovered, or migrated onto it), if any. */
  async pointHeldByVm(vmId: string): Promise<{ replicaId: string; pointId: string } | undefined> {
    const row = await this.#db
      .selectFrom('replica_holds')
      .select(['replica_id', 'point_id'])
      .where('holder', '=', `vm:${vmId}`)
      .executeTakeFirst();
    return row ? { replicaId: row.replica_id, pointId: row.point_id } : undefined;
  }

  async holdersOf(id: string): Promise<string[]> {
    return (await this.#db.selectFrom('replica_holds').select('holder').where('replica_id', '=', id).execute()).map(
      (r) => r.holder,
    );
  }

  /** VMs recorded as made from the replica's points, with their state. */
  async recoveredVmsOf(id: string): Promise<{ name: string; state: string }[]> {
    return this.#db
      .selectFrom('recovered_vms')
      .innerJoin('vms', 'vms.id', 'recovered_vms.vm_id')
      .select(['vms.name as name', 'vms.state as state'])
      .where('recovered_vms.replica_id', '=', id)
      .execute();
  }

  /**
   * A VM made here from a replica point by a real recovery (not a test): the time of that
   * point, null when the point is no longer on record; undefined when the VM was not made so.
   */
  async recoveredFromPointTime(vmId: string): Promise<{ time: string | null } | undefined> {
    return this.#db
      .selectFrom('recovered_vms')
      .leftJoin('replica_points', (j) =>
        j
          .onRef('replica_points.replica_id', '=', 'recovered_vms.replica_id')
          .onRef('replica_points.point_id', '=', 'recovered_vms.point_id'),
      )
      .select('replica_points.time as time')
      .where('recovered_vms.vm_id', '=', vmId)
      .where('recovered_vms.mode', '!=', 'test')
      .executeTakeFirst();
  }

  /**
   * At the recovery site: the protected VMs of `peer` recovered through array failovers
   * (planned or disaster; their replica ids are `array:...`), and when.
   */
  async arrayFailoversFor(peer: string): Promise<{ sourceVmId: string; at: string; mode: string }[]> {
    return this.#db
      .selectFrom('recovered_vms')
      .innerJoin('plan_runs', 'plan_runs.id', 'recovered_vms.run_id')
      .select([
        'recovered_vms.source_vm_id as sourceVmId',
        'recovered_vms.created_at as at',
        'recovered_vms.mode as mode',
      ])
      .where('plan_runs.peer', '=', peer)
      .where('recovered_vms.mode', 'in', ['planned', 'disaster'])
      .where('recovered_vms.replica_id', 'like', 'array:%')
      .execute();
  }

  /**
   * A hold on a replica's point, inside the caller's transaction (a recovered or incoming VM
   * made over it). The replica's row is locked first (PostgreSQL: FOR SHARE, so holds do not
   * wait on each other but do on a removal's FOR UPDATE; SQLite: the transaction, one writer),
   * and a replica that a removal deleted meanwhile refuses the hold with a typed error, so a
   * hold never lands on a replica whose rows are going (see deleteUnlessHeld).
   */
  static async insertHold(
    tx: Transaction<Database>,
    hold: { replicaId: string; holder: string; pointId: string; createdAt: string },
  ): Promise<void> {
    if (!(await lockReplicaRow(tx, hold.replicaId, 'share')))
      throw new MamoriError(
        'REPLICA_REMOVED',
        `the replica ${hold.replicaId} was deleted while a VM was being made from its point ${hold.pointId}; nothing was made: replicate the VM again, then retry`,
        { details: { replica: hold.replicaId, point: hold.pointId } },
      );
    await tx
      .insertInto('replica_holds')
      .values({
        replica_id: hold.replicaId,
        holder: hold.holder,
        point_id: hold.pointId,
        created_at: hold.createdAt,
      })
      .execute();
  }

  /**
   * A removal's rows, unless a VM uses the replica: in one transaction, its row is locked
   * (PostgreSQL: FOR UPDATE, which waits for a hold being inserted and makes the next wait for
   * this; SQLite: the transaction, one writer), then, when no VM holds its points and no
   * recovered VM is recorded from it, `mark` runs (the removal's step 1, on files) and the rows
   * go (step 2). So a hold and a removal never both succeed: the first to lock the row wins.
   * Returns false, having changed nothing, when a VM uses it. A crash inside `mark` or before
   * the commit leaves the rows in place; the marked folder tells the next start to remove them.
   */
  async deleteUnlessHeld(id: string, mark: () => Promise<void>): Promise<boolean> {
    return this.#db.transaction().execute(async (tx) => {
      await lockReplicaRow(tx, id, 'update');
      const held = await tx
        .selectFrom('replica_holds')
        .select('holder')
        .where('replica_id', '=', id)
        .where('holder', 'like', 'vm:%')
        .executeTakeFirst();
      const recovered = await tx
        .selectFrom('recovered_vms')
        .select('vm_id')
        .where('replica_id', '=', id)
        .executeTakeFirst();
      if (held !== undefined || recovered !== undefined) return false;
      await mark();
      await deleteReplicaRows(tx, id);
      return true;
    });
  }

  /** One transaction: the replica's points, holds (on it and by it), recovered-VM records and row. */
  async deleteRows(id: string): Promise<void> {
    await this.#db.transaction().execute((tx) => deleteReplicaRows(tx, id));
  }
}

async function deleteReplicaRows(tx: Transaction<Database>, id: string): Promise<void> {
  await tx.deleteFrom('replica_points').where('replica_id', '=', id).execute();
  await tx
    .deleteFrom('replica_holds')
    .where((eb) => eb.or([eb('replica_id', '=', id), eb('holder', '=', `replica:${id}`)]))
    .execute();
  await tx.deleteFrom('recovered_vms').where('replica_id', '=', id).execute();
  await tx.deleteFrom('replicas').where('id', '=', id).execute();
}

/**
 * Locks a replica's row to the end of the transaction; false when there is no such row.
 * PostgreSQL: FOR UPDATE (a removal) or FOR SHARE (a hold; holds share it). SQLite has no row
 * locks and needs none: its one writer runs each transaction whole (the store's one connection).
 */
async function lockReplicaRow(tx: Transaction<Database>, id: string, mode: 'update' | 'share'): Promise<boolean> {
  let q = tx.selectFrom('replicas').select('id').where('id', '=', id);
  if (tx.getExecutor().adapter instanceof PostgresAdapter) q = mode === 'update' ? q.forUpdate() : q.forShare();
  return (await q.executeTakeFirst()) !== undefined;
}

function toConsistency(c: string): PointConsistency {
  if (c === 'crash' || c === 'application') return c;
  throw new MamoriError(
    'STORE_ROW_INVALID',
    `the database column replica_points.consistency holds ${JSON.stringify(c)}, not crash or application; the row was written by something other than mamori`,
    { details: { column: 'replica_points.consistency' } },
  );
}

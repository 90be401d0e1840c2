import type { Kysely, Selectable } from 'kysely';
import type { Database, ReplicationTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { ContinuousSettings, CycleStats, ReplicaStorage, ReplicationRecord } from '../records/replica-record.js';
import { jsonColumn } from '../json-column.js';

const storageSchema = {
  type: 'object',
  required: ['points', 'chainLength', 'bytes', 'seedBytes'],
  properties: {
    points: { type: 'number' },
    chainLength: { type: 'number' },
    bytes: { type: 'number' },
    seedBytes: { type: 'number' },
  },
};

const cycleSchema = {
  type: 'object',
  required: ['at', 'mode', 'bytesSent', 'bytesChanged', 'durationMs', 'throughputBps'],
  properties: {
    at: { type: 'string' },
    mode: { enum: ['full', 'incremental', 'resync'] },
    bytesSent: { type: 'number' },
    bytesChanged: { type: 'number' },
    durationMs: { type: 'number' },
    throughputBps: { type: 'number' },
    wireBytes: { type: 'number' },
    replica: storageSchema,
  },
};

/** replications.stats: the last few cycles' figures, oldest first. */
export const cycleStatsColumn = jsonColumn<CycleStats[]>('replications.stats', { type: 'array', items: cycleSchema });
/** replications.last_cycle: the newest element of replications.stats, written with it. */
const lastCycleColumn = jsonColumn<CycleStats>('replications.stats[last]', cycleSchema);

/** replications.continuous: the journal's settings of a continuous replication. */
const continuousColumn = jsonColumn<ContinuousSettings>('replications.continuous', {
  type: 'object',
  required: ['checkpointMs', 'journalMs'],
  properties: {
    checkpointMs: { type: 'number' },
    journalMs: { type: 'number' },
    appCheckpointMs: { type: ['number', 'null'] },
  },
});

/** A replication as the status of all lists it: its VM's name, and of its stats only the newest cycle and storage. */
export type ReplicationSummary = Omit<
  ReplicationRecord,
  'stats' | 'replicaId' | 'lastPointId' | 'createdAt' | 'updatedAt'
> & {
  vmName: string;
  lastCycle: CycleStats | null;
  replica: ReplicaStorage | null;
};

/** The source side of replication: the replications table, one row per protected VM. */
export class ReplicationRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async find(vmId: string): Promise<ReplicationRecord | undefined> {
    const r = await this.#db.selectFrom('replications').selectAll().where('vm_id', '=', vmId).executeTakeFirst();
    return r && toRecord(r);
  }

  async list(): Promise<ReplicationRecord[]> {
    return (await this.#db.selectFrom('replications').selectAll().execute()).map(toRecord);
  }

  /** Every replication with its VM's name (status of all). */
  async listWithVmNames(): Promise<(ReplicationRecord & { vmName: string })[]> {
    const rows = await this.#db
      .selectFrom('replications')
      .innerJoin('vms', 'vms.id', 'replications.vm_id')
      .selectAll('replications')
      .select('vms.name as vm_name')
      .execute();
    return rows.map((r) => ({ ...toRecord(r), vmName: r.vm_name }));
  }

  /**
   * Every replication with its VM's name, the newest cycle's figures and the newest storage
   * report (GET /replication), from the last_cycle column: the ten cycles' text of every row is
   * neither read nor parsed, by the server or the database; on 1,000 replications that was 2 MB
   * of JSON a request (bench/store). The cycles are shared and frozen.
   */
  async listSummaries(): Promise<ReplicationSummary[]> {
    const rows = await this.#db
      .selectFrom('replications')
      .innerJoin('vms', 'vms.id', 'replications.vm_id')
      .select([
        'replications.vm_id',
        'replications.peer',
        'replications.rpo_ms',
        'replications.keep_points',
        'replications.state',
        'replications.generation',
        'replications.last_point_at',
        'replications.failures',
        'replications.last_error',
        'replications.bandwidth_bps',
        'replications.continuous',
        'vms.name as vm_name',
        'replications.last_cycle',
      ])
      .execute();
    const out = rows.map((r): ReplicationSummary => {
      const last = r.last_cycle === null ? null : lastCycleColumn.decodeShared(r.last_cycle);
      return {
        vmId: r.vm_id,
        peer: r.peer,
        rpoMs: r.rpo_ms,
        keepPoints: r.keep_points,
        state: r.state === 'paused' ? 'paused' : 'enabled',
        generation: r.generation,
        lastPointAt: r.last_point_at,
        failures: r.failures,
        lastError: r.last_error,
        bandwidthBps: r.bandwidth_bps,
        continuous: r.continuous === null ? null : continuousColumn.decodeShared(r.continuous),
        vmName: r.vm_name,
        lastCycle: last,
        replica: last?.replica ?? null,
      };
    });
    // The newest cycle carries the newest storage report (cycle-runner.ts records both); a row
    // whose newest cycle has none (written before reports existed) is read whole, alone.
    const older = out.filter((r) => r.lastCycle !== null && r.lastCycle.replica === undefined);
    if (older.length > 0) {
      const stats = await this.#db
        .selectFrom('replications')
        .select(['vm_id', 'stats'])
        .where(
          'vm_id',
          'in',
          older.map((r) => r.vmId),
        )
        .execute();
      const byVm = new Map(stats.map((r) => [r.vm_id, cycleStatsColumn.decode(r.stats)]));
      for (const r of older)
        r.replica = [...(byVm.get(r.vmId) ?? [])].reverse().find((c) => c.replica !== undefined)?.replica ?? null;
    }
    return out;
  }

  async enabledVmIds(): Promise<string[]> {
    return (await this.#db.selectFrom('replications').select('vm_id').where('state', '=', 'enabled').execute()).map(
      (r) => r.vm_id,
    );
  }

  async vmIds(): Promise<string[]> {
    return (await this.#db.selectFrom('replications').select('vm_id').execute()).map((r) => r.vm_id);
  }

  /** The site a VM replicates to; undefined when it is not replicated. */
  async peerOf(vmId: string): Promise<string | undefined> {
    return (await this.#db.selectFrom('replications').select('peer').where('vm_id', '=', vmId).executeTakeFirst())
      ?.peer;
  }

  /**
   * The replications to `peer`, oldest group name first then VM name, each with its VM's id and
   * protection group (null: in none): what the protected site's inventory lists.
   */
  async toPeerWithGroups(peer: string): Promise<
    {
      vmId: string;
      group: string | null;
      replicaId: string;
      rpoMs: number;
      keepPoints: number;
      continuous: ContinuousSettings | null;
    }[]
  > {
    const rows = await this.#db
      .selectFrom('replications')
      .innerJoin('vms', 'vms.id', 'replications.vm_id')
      .leftJoin('protection_group_vms', 'protection_group_vms.vm_id', 'vms.id')
      .leftJoin('protection_groups', 'protection_groups.id', 'protection_group_vms.group_id')
      .select([
        'protection_groups.name as group',
        'vms.id as vmId',
        'replications.replica_id as replicaId',
        'replications.rpo_ms as rpoMs',
        'replications.keep_points as keepPoints',
        'replications.continuous as continuous',
      ])
      .where('replications.peer', '=', peer)
      .orderBy('protection_groups.name')
      .orderBy('vms.name')
      .execute();
    return rows.map((r) => ({
      ...r,
      continuous: r.continuous === null ? null : continuousColumn.decodeShared(r.continuous),
    }));
  }

  async insert(
    r: Omit<ReplicationRecord, 'stats' | 'failures' | 'lastError' | 'lastPointAt' | 'lastPointId'>,
  ): Promise<void> {
    await this.#db
      .insertInto('replications')
      .values({
        vm_id: r.vmId,
        peer: r.peer,
        replica_id: r.replicaId,
        rpo_ms: r.rpoMs,
        keep_points: r.keepPoints,
        state: r.state,
        generation: r.generation,
        last_point_at: null,
        last_point_id: null,
        failures: 0,
        last_error: null,
        stats: cycleStatsColumn.encode([]),
        last_cycle: null,
        created_at: r.createdAt,
        updated_at: r.updatedAt,
        bandwidth_bps: r.bandwidthBps,
        continuous: r.continuous === null ? null : continuousColumn.encode(r.continuous),
      })
      .execute();
  }

  async delete(vmId: string): Promise<void> {
    await this.#db.deleteFrom('replications').where('vm_id', '=', vmId).execute();
  }

  async setState(vmId: string, state: ReplicationRecord['state']): Promise<void> {
    await this.#db
      .updateTable('replications')
      .set({ state, updated_at: new Date().toISOString() })
      .where('vm_id', '=', vmId)
      .execute();
  }

  /** A failed cycle: the count the caller computed and the error; the last good point stays. */
  async recordFailure(vmId: string, failures: number, message: string): Promise<void> {
    await this.#db
      .updateTable('replications')
      .set({ failures, last_error: message, updated_at: new Date().toISOString() })
      .where('vm_id', '=', vmId)
      .execute();
  }

  /** A committed cycle: the new bitmap generation, the point, and the figures (failures reset). */
  async recordPoint(
    vmId: string,
    p: { generation: number; pointId: string; pointAt: string; stats: CycleStats[] },
  ): Promise<void> {
    await this.#db
      .updateTable('replications')
      .set({
        generation: p.generation,
        last_point_at: p.pointAt,
        last_point_id: p.pointId,
        failures: 0,
        last_error: null,
        stats: cycleStatsColumn.encode(p.stats),
        // Beside the stats, in the same update: listSummaries reads it alone.
        last_cycle: p.stats.length === 0 ? null : lastCycleColumn.encode(p.stats.at(-1)!),
        updated_at: new Date().toISOString(),
      })
      .where('vm_id', '=', vmId)
      .execute();
  }
}

function toRecord(r: Selectable<ReplicationTable>): ReplicationRecord {
  return {
    vmId: r.vm_id,
    peer: r.peer,
    replicaId: r.replica_id,
    rpoMs: r.rpo_ms,
    keepPoints: r.keep_points,
    state: r.state === 'paused' ? 'paused' : 'enabled',
    generation: r.generation,
    lastPointAt: r.last_point_at,
    lastPointId: r.last_point_id,
    failures: r.failures,
    lastError: r.last_error,
    stats: cycleStatsColumn.decode(r.stats),
    bandwidthBps: r.bandwidth_bps,
    continuous: r.continuous === null ? null : continuousColumn.decode(r.continuous),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

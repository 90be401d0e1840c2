import type { Kysely, Selectable } from 'kysely';
import type { Database, ReplicationTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { CycleStats, ReplicationRecord } from '../records/replica-record.js';
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

/** replications.stats: the last few cycles' figures, oldest first. */
export const cycleStatsColumn = jsonColumn<CycleStats[]>('replications.stats', {
  type: 'array',
  items: {
    type: 'object',
    required: ['at', 'mode', 'bytesSent', 'bytesChanged', 'durationMs', 'throughputBps'],
    properties: {
      at: { type: 'string' },
      mode: { enum: ['full', 'incremental', 'resync'] },
      bytesSent: { type: 'number' },
      bytesChanged: { type: 'number' },
      durationMs: { type: 'number' },
      throughputBps: { type: 'number' },
      replica: storageSchema,
    },
  },
});

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
  async toPeerWithGroups(
    peer: string,
  ): Promise<{ vmId: string; group: string | null; replicaId: string; rpoMs: number; keepPoints: number }[]> {
    return this.#db
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
      ])
      .where('replications.peer', '=', peer)
      .orderBy('protection_groups.name')
      .orderBy('vms.name')
      .execute();
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
        created_at: r.createdAt,
        updated_at: r.updatedAt,
        bandwidth_bps: r.bandwidthBps,
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
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

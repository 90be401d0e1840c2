import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { VmDefinition } from '../records/vm-definition.js';
import type { DiskRecord } from '../records/disk-record.js';
import { VmRepo } from './vm-repo.js';
import { DiskRepo } from './disk-repo.js';
import { ReplicaRepo } from './replica-repo.js';

/** Which run made a VM from which replica point (recovered_vms). */
export interface RecoveredVmRecord {
  vmId: string;
  runId: string;
  mode: string;
  /** A replica id, or `array:...` for a VM recovered from an array-based group's devices. */
  replicaId: string;
  pointId: string;
  sourceVmId: string;
  createdAt: string;
}

/** VMs plan runs made at this site from replicas, and the holds that keep their points. */
export class RecoveredVmRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async find(vmId: string): Promise<RecoveredVmRecord | undefined> {
    const r = await this.#db.selectFrom('recovered_vms').selectAll().where('vm_id', '=', vmId).executeTakeFirst();
    return (
      r && {
        vmId: r.vm_id,
        runId: r.run_id,
        mode: r.mode,
        replicaId: r.replica_id,
        pointId: r.point_id,
        sourceVmId: r.source_vm_id,
        createdAt: r.created_at,
      }
    );
  }

  /**
   * One transaction: the VM, its disks, a hold that keeps retention off the point (host-based
   * recoveries: `hold`), and the record of which run made it. A failure writes none of them.
   */
  async create(input: {
    def: VmDefinition;
    disks: DiskRecord[];
    now: string;
    record: Omit<RecoveredVmRecord, 'vmId' | 'createdAt'>;
    hold: boolean;
  }): Promise<void> {
    const { def, now, record } = input;
    await this.#db.transaction().execute(async (tx) => {
      await VmRepo.insert(tx, def, now);
      for (const d of input.disks) await DiskRepo.insert(tx, d);
      if (input.hold)
        await ReplicaRepo.insertHold(tx, {
          replicaId: record.replicaId,
          holder: `vm:${def.id}`,
          pointId: record.pointId,
          createdAt: now,
        });
      await tx
        .insertInto('recovered_vms')
        .values({
          vm_id: def.id,
          run_id: record.runId,
          mode: record.mode,
          replica_id: record.replicaId,
          point_id: record.pointId,
          source_vm_id: record.sourceVmId,
          created_at: now,
        })
        .execute();
    });
  }

  /** The VM a run already made for a protected VM, with the time of its point (host-based: the point must be on record). */
  async madeByRunWithPoint(
    runId: string,
    sourceVmId: string,
  ): Promise<{ vmId: string; name: string; pointId: string; time: string } | undefined> {
    return this.#db
      .selectFrom('recovered_vms')
      .innerJoin('vms', 'vms.id', 'recovered_vms.vm_id')
      .innerJoin('replica_points', (j) =>
        j
          .onRef('replica_points.replica_id', '=', 'recovered_vms.replica_id')
          .onRef('replica_points.point_id', '=', 'recovered_vms.point_id'),
      )
      .select([
        'vms.id as vmId',
        'vms.name as name',
        'recovered_vms.point_id as pointId',
        'replica_points.time as time',
      ])
      .where('recovered_vms.run_id', '=', runId)
      .where('recovered_vms.source_vm_id', '=', sourceVmId)
      .executeTakeFirst();
  }

  /** The VM a run already made for a protected VM (array-based: no replica point row). */
  async madeByRun(
    runId: string,
    sourceVmId: string,
  ): Promise<{ vmId: string; name: string; pointId: string } | undefined> {
    return this.#db
      .selectFrom('recovered_vms')
      .innerJoin('vms', 'vms.id', 'recovered_vms.vm_id')
      .select(['vms.id as vmId', 'vms.name as name', 'recovered_vms.point_id as pointId'])
      .where('recovered_vms.run_id', '=', runId)
      .where('recovered_vms.source_vm_id', '=', sourceVmId)
      .executeTakeFirst();
  }

  /** Test VMs still registered, with the protected VM each was made from; `replicaId` narrows to one replica (or array group). */
  async testVms(replicaId?: string): Promise<{ vmId: string; name: string; sourceVmId: string }[]> {
    let q = this.#db
      .selectFrom('recovered_vms')
      .innerJoin('vms', 'vms.id', 'recovered_vms.vm_id')
      .select(['recovered_vms.vm_id as vmId', 'vms.name as name', 'recovered_vms.source_vm_id as sourceVmId'])
      .where('recovered_vms.mode', '=', 'test');
    if (replicaId !== undefined) q = q.where('recovered_vms.replica_id', '=', replicaId);
    return q.execute();
  }

  /** The VMs still registered that were recovered at a continuous replica's point in time (`journal@TIME`). */
  async atPointsInTime(): Promise<{ vmId: string; mode: string; replicaId: string; pointId: string }[]> {
    return this.#db
      .selectFrom('recovered_vms')
      .innerJoin('vms', 'vms.id', 'recovered_vms.vm_id')
      .select([
        'recovered_vms.vm_id as vmId',
        'recovered_vms.mode as mode',
        'recovered_vms.replica_id as replicaId',
        'recovered_vms.point_id as pointId',
      ])
      .where('recovered_vms.point_id', 'like', 'journal@%')
      .execute();
  }

  /** A VM's hold on the replica point under its disks goes. */
  async releaseHold(vmId: string): Promise<void> {
    await this.#db.deleteFrom('replica_holds').where('holder', '=', `vm:${vmId}`).execute();
  }

  async delete(vmId: string): Promise<void> {
    await this.#db.deleteFrom('recovered_vms').where('vm_id', '=', vmId).execute();
  }

  /** Whether the run still has a recovered VM on record. */
  async runHasVms(runId: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('recovered_vms').select('vm_id').where('run_id', '=', runId).executeTakeFirst()) !==
      undefined
    );
  }
}

import type { Kysely, Selectable, Transaction } from 'kysely';
import type { Database, VmTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import type { VmDefinition, VmState } from '../records/vm-definition.js';
import type { DiskRecord } from '../records/disk-record.js';
import { jsonColumn } from '../json-column.js';
import { DiskRepo } from './disk-repo.js';

type Db = Kysely<Database> | Transaction<Database>;

export interface VmRow {
  id: string;
  name: string;
  definition: VmDefinition;
  state: VmState;
  stateReason: string | null;
  pid: number | null;
  lastHeartbeatAt: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A protected VM whose replica the peer promoted (failover): it stays off here unless forced. */
export interface SupersededVm {
  vmId: string;
  generation: number;
  bySite: string;
  reason: string;
  at: string;
}

/**
 * vms.definition. The schema checks the shape the code relies on; optional fields added over
 * time (guestAgent, diskBus, configDriveDiskId) stay optional, and unknown ones are kept.
 */
export const vmDefinitionColumn = jsonColumn<VmDefinition>('vms.definition', {
  type: 'object',
  required: [
    'id',
    'name',
    'vcpus',
    'memoryMiB',
    'firmware',
    'machineType',
    'diskIds',
    'nics',
    'boot',
    'stopTimeoutSec',
  ],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    vcpus: { type: 'integer' },
    memoryMiB: { type: 'integer' },
    firmware: { enum: ['bios', 'uefi'] },
    machineType: { type: 'string' },
    diskIds: { type: 'array', items: { type: 'string' } },
    nics: {
      type: 'array',
      items: {
        type: 'object',
        required: ['mac', 'model', 'network'],
        properties: { mac: { type: 'string' }, model: { type: 'string' }, network: { type: 'string' } },
      },
    },
    boot: { type: 'object', required: ['kind'], properties: { kind: { enum: ['disk', 'test-guest'] } } },
    stopTimeoutSec: { type: 'number' },
    guestAgent: { type: 'boolean' },
    diskBus: { enum: ['virtio', 'sata'] },
    configDriveDiskId: { type: 'string' },
  },
});

/** The vms table (and the VM's side of disks, holds and supersession), with the definition parsed. */
export class VmRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async list(): Promise<VmRow[]> {
    const rows = await this.#db.selectFrom('vms').selectAll().orderBy('name').execute();
    return rows.map((r) => toRow(r));
  }

  /**
   * `list` for read-only views (GET /vms): each definition is shared and frozen, decoded once
   * per text (vmDefinitionColumn.decodeShared), so a list of 1,000 unchanged VMs parses and
   * validates none of them again (bench/store). Never change what it returns.
   */
  async listShared(): Promise<VmRow[]> {
    const rows = await this.#db.selectFrom('vms').selectAll().orderBy('name').execute();
    return rows.map((r) => toRow(r, vmDefinitionColumn.decodeShared(r.definition)));
  }

  async findByName(name: string): Promise<VmRow | undefined> {
    const row = await this.#db.selectFrom('vms').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toRow(row);
  }

  async findById(id: string): Promise<VmRow | undefined> {
    const row = await this.#db.selectFrom('vms').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toRow(row);
  }

  async idOfName(name: string): Promise<string | undefined> {
    return (await this.#db.selectFrom('vms').select('id').where('name', '=', name).executeTakeFirst())?.id;
  }

  /** A VM's name and state without its definition (for naming what uses something). */
  async nameAndState(id: string): Promise<{ name: string; state: string } | undefined> {
    return this.#db.selectFrom('vms').select(['name', 'state']).where('id', '=', id).executeTakeFirst();
  }

  /** VM ids and names, by id (a cheap lookup for views that name VMs). */
  async namesByIds(ids: string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const rows = await this.#db.selectFrom('vms').select(['id', 'name']).where('id', 'in', ids).execute();
    return new Map(rows.map((r) => [r.id, r.name]));
  }

  /**
   * The name of a VM that uses the disk: its owner (`ownerVmId`), or any VM whose definition
   * lists it (shared disks are attached without an owner column). LIKE is plain SQL on both dialects.
   */
  async nameOfVmUsingDisk(diskId: string, ownerVmId: string | null): Promise<string | undefined> {
    const vm = await this.#db
      .selectFrom('vms')
      .select('name')
      .where((eb) => eb.or([eb('id', '=', ownerVmId ?? ''), eb('definition', 'like', `%"${diskId}"%`)]))
      .executeTakeFirst();
    return vm?.name;
  }

  /** Inserts a stopped VM's row in `db` (a transaction when other rows go with it). A taken name is the unique violation vms.name. */
  static async insert(db: Db, def: VmDefinition, now: string, stateReason: string | null = null): Promise<void> {
    await db
      .insertInto('vms')
      .values({
        id: def.id,
        name: def.name,
        definition: vmDefinitionColumn.encode(def),
        state: 'stopped',
        state_reason: stateReason,
        pid: null,
        last_heartbeat_at: null,
        created_at: now,
        updated_at: now,
      })
      .execute();
  }

  /**
   * One transaction: the VM's row, the disks made for it, and the existing disks it takes
   * (not shared ones, which stay unowned). A failure leaves none of them.
   */
  async create(def: VmDefinition, now: string, made: DiskRecord[], attachIds: string[]): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await VmRepo.insert(tx, def, now);
      for (const d of made) await DiskRepo.insert(tx, d);
      for (const id of attachIds) await tx.updateTable('disks').set({ vm_id: def.id }).where('id', '=', id).execute();
    });
  }

  /**
   * One transaction: detaches the disks the VM only used, deletes those made for it, the VM,
   * and a recovered VM's hold on the replica point under its disks.
   */
  async deleteWithDisks(vmId: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx
        .updateTable('disks')
        .set({ vm_id: null })
        .where('vm_id', '=', vmId)
        .where('owned_by_vm', '=', 0)
        .execute();
      await tx.deleteFrom('disks').where('vm_id', '=', vmId).where('owned_by_vm', '=', 1).execute();
      await tx.deleteFrom('vms').where('id', '=', vmId).execute();
      await tx.deleteFrom('replica_holds').where('holder', '=', `vm:${vmId}`).execute();
    });
  }

  /** One transaction: the VM's row and every disk row of it go; no file is touched. */
  async forget(vmId: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx.deleteFrom('disks').where('vm_id', '=', vmId).execute();
      await tx.deleteFrom('vms').where('id', '=', vmId).execute();
    });
  }

  /** Replaces the definition (the row's other columns are left as they are). */
  async setDefinition(def: VmDefinition): Promise<void> {
    await this.#db
      .updateTable('vms')
      .set({ definition: vmDefinitionColumn.encode(def), updated_at: new Date().toISOString() })
      .where('id', '=', def.id)
      .execute();
  }

  async setState(
    id: string,
    state: VmState,
    fields: { reason?: string | null; pid?: number | null } = {},
  ): Promise<void> {
    const update: Record<string, unknown> = { state, updated_at: new Date().toISOString() };
    if (fields.reason !== undefined) update['state_reason'] = fields.reason;
    if (fields.pid !== undefined) update['pid'] = fields.pid;
    await this.#db.updateTable('vms').set(update).where('id', '=', id).execute();
  }

  async clearStateReason(id: string): Promise<void> {
    await this.#db.updateTable('vms').set({ state_reason: null }).where('id', '=', id).execute();
  }

  async setHeartbeat(id: string, at: string): Promise<void> {
    await this.#db.updateTable('vms').set({ last_heartbeat_at: at }).where('id', '=', id).execute();
  }

  /**
   * Records that the peer promoted the VM's replica (failover generation `generation`); an
   * older or equal generation on record is left as it is. Returns whether it was recorded.
   */
  async markSuperseded(s: SupersededVm): Promise<boolean> {
    const existing = await this.#db
      .selectFrom('superseded_vms')
      .select('generation')
      .where('vm_id', '=', s.vmId)
      .executeTakeFirst();
    if (existing && existing.generation >= s.generation) return false;
    await this.#db
      .insertInto('superseded_vms')
      .values({ vm_id: s.vmId, generation: s.generation, by_site: s.bySite, reason: s.reason, at: s.at })
      .onConflict((oc) =>
        oc.column('vm_id').doUpdateSet({ generation: s.generation, by_site: s.bySite, reason: s.reason, at: s.at }),
      )
      .execute();
    return true;
  }

  /** Why a VM must stay off here (its replica was promoted at the peer), if it must. */
  async findSuperseded(vmId: string): Promise<SupersededVm | undefined> {
    const s = await this.#db.selectFrom('superseded_vms').selectAll().where('vm_id', '=', vmId).executeTakeFirst();
    return s && { vmId: s.vm_id, generation: s.generation, bySite: s.by_site, reason: s.reason, at: s.at };
  }
}

function toRow(r: Selectable<VmTable>, definition = vmDefinitionColumn.decode(r.definition)): VmRow {
  return {
    id: r.id,
    name: r.name,
    definition,
    state: r.state as VmState,
    stateReason: r.state_reason,
    pid: r.pid,
    lastHeartbeatAt: r.last_heartbeat_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

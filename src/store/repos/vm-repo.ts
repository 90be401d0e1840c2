import type { Kysely, Selectable } from 'kysely';
import type { Database, VmTable } from '../schema.js';
import type { VmDefinition, VmState } from '../../vms/vm-definition.js';

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

/** The vms table, with the definition parsed. */
export class VmRepo {
  #db: Kysely<Database>;
  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async list(): Promise<VmRow[]> {
    const rows = await this.#db.selectFrom('vms').selectAll().orderBy('name').execute();
    return rows.map(toRow);
  }

  async findByName(name: string): Promise<VmRow | undefined> {
    const row = await this.#db.selectFrom('vms').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toRow(row);
  }

  async findById(id: string): Promise<VmRow | undefined> {
    const row = await this.#db.selectFrom('vms').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toRow(row);
  }

  async setState(id: string, state: VmState, fields: { reason?: string | null; pid?: number | null } = {}): Promise<void> {
    const update: Record<string, unknown> = { state, updated_at: new Date().toISOString() };
    if (fields.reason !== undefined) update['state_reason'] = fields.reason;
    if (fields.pid !== undefined) update['pid'] = fields.pid;
    await this.#db.updateTable('vms').set(update).where('id', '=', id).execute();
  }

  async setHeartbeat(id: string, at: string): Promise<void> {
    await this.#db.updateTable('vms').set({ last_heartbeat_at: at }).where('id', '=', id).execute();
  }
}

function toRow(r: Selectable<VmTable>): VmRow {
  return {
    id: r.id,
    name: r.name,
    definition: JSON.parse(r.definition) as VmDefinition,
    state: r.state as VmState,
    stateReason: r.state_reason,
    pid: r.pid,
    lastHeartbeatAt: r.last_heartbeat_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

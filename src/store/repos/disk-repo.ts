import type { Kysely, Selectable, Transaction } from 'kysely';
import type { Database, DiskTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { MamoriError } from '../../core/mamori-error.js';
import { uniqueViolation } from '../unique-violation.js';
import { jsonColumn } from '../json-column.js';
import type { DiskKind, DiskRecord, ImageFormat, RdmMode } from '../records/disk-record.js';

type Db = Kysely<Database> | Transaction<Database>;

/** disks.overlays: the qcow2 overlay paths of external snapshots, oldest first. */
export const diskOverlaysColumn = jsonColumn<string[]>('disks.overlays', { type: 'array', items: { type: 'string' } });

/** What a VM's view shows of each of its disks. */
export type DiskSummary = Pick<
  DiskRecord,
  'id' | 'name' | 'kind' | 'format' | 'path' | 'sizeBytes' | 'rdmMode' | 'shared'
>;

/** The disks table. */
export class DiskRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async list(): Promise<DiskRecord[]> {
    return (await this.#db.selectFrom('disks').selectAll().orderBy('name').execute()).map(toRecord);
  }

  /**
   * Every disk with only what a VM's view shows of it (GET /vms): a third of the columns and no
   * overlays to decode, which on 1,000 disks is most of the query's cost (bench/store).
   */
  async listSummaries(): Promise<DiskSummary[]> {
    const rows = await this.#db.selectFrom('disks').select(SUMMARY_COLUMNS).execute();
    return rows.map(toSummary);
  }

  async findByName(name: string): Promise<DiskRecord | undefined> {
    const r = await this.#db.selectFrom('disks').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toRecord(r);
  }

  async findByPath(path: string): Promise<DiskRecord | undefined> {
    const r = await this.#db.selectFrom('disks').selectAll().where('path', '=', path).executeTakeFirst();
    return r && toRecord(r);
  }

  async byIds(ids: string[]): Promise<DiskRecord[]> {
    if (ids.length === 0) return [];
    return (await this.#db.selectFrom('disks').selectAll().where('id', 'in', ids).execute()).map(toRecord);
  }

  async forVm(vmId: string): Promise<DiskRecord[]> {
    return (await this.#db.selectFrom('disks').selectAll().where('vm_id', '=', vmId).execute()).map(toRecord);
  }

  /** Inserts a disk row; a name another request took meanwhile is DISK_EXISTS (409), never a 500. */
  static async insert(db: Db, d: DiskRecord): Promise<void> {
    try {
      await db
        .insertInto('disks')
        .values({
          id: d.id,
          name: d.name,
          pool: d.pool,
          kind: d.kind,
          format: d.format,
          path: d.path,
          size_bytes: d.sizeBytes,
          rdm_mode: d.rdmMode,
          shared: d.shared ? 1 : 0,
          vm_id: d.vmId,
          owned_by_vm: d.ownedByVm ? 1 : 0,
          created_at: d.createdAt,
          overlays: diskOverlaysColumn.encode(d.overlays),
        })
        .execute();
    } catch (e) {
      if (uniqueViolation(e) === 'disks.name')
        throw new MamoriError('DISK_EXISTS', `a disk named ${d.name} already exists; choose another name`, {
          details: { name: d.name },
        });
      throw e;
    }
  }

  async insert(d: DiskRecord): Promise<void> {
    await DiskRepo.insert(this.#db, d);
  }

  async setOverlays(id: string, overlays: string[]): Promise<void> {
    await this.#db
      .updateTable('disks')
      .set({ overlays: diskOverlaysColumn.encode(overlays) })
      .where('id', '=', id)
      .execute();
  }

  /** True when this call deleted the row (a concurrent delete of the same disk gets false). */
  async delete(id: string): Promise<boolean> {
    const r = await this.#db.deleteFrom('disks').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }
}

/** The columns a DiskSummary is read from. */
const SUMMARY_COLUMNS = ['id', 'name', 'kind', 'format', 'path', 'size_bytes', 'rdm_mode', 'shared'] as const;

function toSummary(r: Pick<Selectable<DiskTable>, (typeof SUMMARY_COLUMNS)[number]>): DiskSummary {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind as DiskKind,
    format: r.format as ImageFormat,
    path: r.path,
    sizeBytes: r.size_bytes,
    rdmMode: r.rdm_mode as RdmMode | null,
    shared: r.shared === 1,
  };
}

export function toRecord(r: Selectable<DiskTable>): DiskRecord {
  return {
    ...toSummary(r),
    pool: r.pool,
    vmId: r.vm_id,
    ownedByVm: r.owned_by_vm === 1,
    createdAt: r.created_at,
    overlays: diskOverlaysColumn.decode(r.overlays),
  };
}

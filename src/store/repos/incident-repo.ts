import type { Kysely, Selectable } from 'kysely';
import type { Database, EventTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { jsonColumn } from '../json-column.js';

export type IncidentRecordSeverity = 'info' | 'warning' | 'critical';

/** An events row (an incident) with its details decoded. */
export interface IncidentRecord {
  id: string;
  kind: string;
  severity: IncidentRecordSeverity;
  target: string;
  message: string;
  details: Record<string, unknown> | null;
  openedAt: string;
  clearedAt: string | null;
}

/** What the raiser recorded about the incident (its fields differ per kind; remedies read some). */
export const incidentDetailsColumn = jsonColumn<Record<string, unknown>>('events.details', { type: 'object' });

/** The events table: incidents, opened once and cleared when they end (events/incident-log.ts). */
export class IncidentRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async insert(i: IncidentRecord): Promise<void> {
    await this.#db
      .insertInto('events')
      .values({
        id: i.id,
        kind: i.kind,
        severity: i.severity,
        target: i.target,
        message: i.message,
        details: i.details === null ? null : incidentDetailsColumn.encode(i.details),
        opened_at: i.openedAt,
        cleared_at: i.clearedAt,
      })
      .execute();
  }

  /** Clears the open incident of this kind for the target; true if one was open. */
  async clearOpen(kind: string, target: string, at: string): Promise<boolean> {
    const r = await this.#db
      .updateTable('events')
      .set({ cleared_at: at })
      .where('kind', '=', kind)
      .where('target', '=', target)
      .where('cleared_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Rewrites what the open incident of this kind for the target says; true if one was open. */
  async updateOpen(
    kind: string,
    target: string,
    message: string,
    details: Record<string, unknown> | null,
  ): Promise<boolean> {
    const r = await this.#db
      .updateTable('events')
      .set({ message, details: details === null ? null : incidentDetailsColumn.encode(details) })
      .where('kind', '=', kind)
      .where('target', '=', target)
      .where('cleared_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async findOpen(kind: string, target: string): Promise<IncidentRecord | undefined> {
    const row = await this.#db
      .selectFrom('events')
      .selectAll()
      .where('kind', '=', kind)
      .where('target', '=', target)
      .where('cleared_at', 'is', null)
      .executeTakeFirst();
    return row && toIncidentRecord(row);
  }

  /** Open incidents per kind. */
  async openCounts(): Promise<{ kind: string; count: number }[]> {
    const rows = await this.#db
      .selectFrom('events')
      .select(['kind', (eb) => eb.fn.countAll<number>().as('count')])
      .where('cleared_at', 'is', null)
      .groupBy('kind')
      .execute();
    return rows.map((r) => ({ kind: r.kind, count: Number(r.count) }));
  }

  /** Every open incident of one kind (events_open serves it), for views that show one per target. */
  async openOfKind(kind: string): Promise<IncidentRecord[]> {
    const rows = await this.#db
      .selectFrom('events')
      .selectAll()
      .where('kind', '=', kind)
      .where('cleared_at', 'is', null)
      .execute();
    return rows.map(toIncidentRecord);
  }

  /** Newest first. */
  async list(filter: { open?: boolean; target?: string; kind?: string; limit: number }): Promise<IncidentRecord[]> {
    let q = this.#db.selectFrom('events').selectAll();
    if (filter.open === true) q = q.where('cleared_at', 'is', null);
    if (filter.kind !== undefined) q = q.where('kind', '=', filter.kind);
    if (filter.target !== undefined) q = q.where('target', '=', filter.target);
    return (await q.orderBy('opened_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute()).map(
      toIncidentRecord,
    );
  }
}

export function toIncidentRecord(r: Selectable<EventTable>): IncidentRecord {
  return {
    id: r.id,
    kind: r.kind,
    severity: r.severity as IncidentRecordSeverity,
    target: r.target,
    message: r.message,
    details: r.details === null ? null : incidentDetailsColumn.decode(r.details),
    openedAt: r.opened_at,
    clearedAt: r.cleared_at,
  };
}

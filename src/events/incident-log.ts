import type { Kysely, Selectable } from 'kysely';
import type { Database, EventTable } from '../store/schema.js';
import { newShortId } from '../core/ids.js';
import { incidentRemedy } from './incident-remedies.js';

export const INCIDENT_SEVERITIES = ['info', 'warning', 'critical'] as const;
export type IncidentSeverity = (typeof INCIDENT_SEVERITIES)[number];

export interface Incident {
  id: string;
  kind: string;
  severity: IncidentSeverity;
  target: string;
  message: string;
  details: Record<string, unknown> | null;
  openedAt: string;
  clearedAt: string | null;
  /** What to do about it, naming the commands (src/events/incident-remedies.ts); null if the kind has none. */
  remedy: string | null;
}

/**
 * Events that last: an incident opens once (a violated RPO), stays open while the condition
 * holds, and clears when it ends. Raising the same kind for the same target again while one
 * is open changes nothing, so whoever watches (status, the console, an alert webhook) sees
 * each incident once, like vSphere's alarm states rather than a stream of repeats.
 */
export class IncidentLog {
  #db: Kysely<Database>;
  #listeners: (() => void)[] = [];

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  /**
   * Called after an incident opened or cleared (already written): the alert notifier wakes
   * up on it. A nudge only, with no payload: the listener reads what changed from the table,
   * so a nudge lost to a crash is made up by its next pass.
   */
  onTransition(listener: () => void): void {
    this.#listeners.push(listener);
  }

  #notify(): void {
    for (const l of this.#listeners) l();
  }

  /** Opens an incident unless one of this kind is open for the target; returns the open one and whether it is new. */
  async raise(input: { kind: string; target: string; severity: IncidentSeverity; message: string; details?: Record<string, unknown> }): Promise<{ incident: Incident; opened: boolean }> {
    const open = await this.openFor(input.kind, input.target);
    if (open) return { incident: open, opened: false };
    const row = {
      id: newShortId('evt'), kind: input.kind, severity: input.severity, target: input.target, message: input.message,
      details: input.details ? JSON.stringify(input.details) : null, opened_at: new Date().toISOString(), cleared_at: null,
    };
    await this.#db.insertInto('events').values(row).execute();
    this.#notify();
    return { incident: toIncident(row), opened: true };
  }

  /** Clears the open incident of this kind for the target, if any; true if one was open. */
  async clear(kind: string, target: string): Promise<boolean> {
    const r = await this.#db.updateTable('events').set({ cleared_at: new Date().toISOString() })
      .where('kind', '=', kind).where('target', '=', target).where('cleared_at', 'is', null).executeTakeFirst();
    const cleared = Number(r.numUpdatedRows) > 0;
    if (cleared) this.#notify();
    return cleared;
  }

  async openFor(kind: string, target: string): Promise<Incident | null> {
    const row = await this.#db.selectFrom('events').selectAll().where('kind', '=', kind).where('target', '=', target).where('cleared_at', 'is', null).executeTakeFirst();
    return row ? toIncident(row) : null;
  }

  /** Open incidents per kind (the metrics' gauge). */
  async openCounts(): Promise<{ kind: string; count: number }[]> {
    const rows = await this.#db.selectFrom('events').select(['kind', (eb) => eb.fn.countAll<number>().as('count')]).where('cleared_at', 'is', null).groupBy('kind').execute();
    return rows.map((r) => ({ kind: r.kind, count: Number(r.count) }));
  }

  /** Newest first. */
  async list(filter: { open?: boolean; target?: string; kind?: string; limit?: number } = {}): Promise<Incident[]> {
    let q = this.#db.selectFrom('events').selectAll();
    if (filter.open === true) q = q.where('cleared_at', 'is', null);
    if (filter.kind !== undefined) q = q.where('kind', '=', filter.kind);
    if (filter.target !== undefined) q = q.where('target', '=', filter.target);
    return (await q.orderBy('opened_at', 'desc').orderBy('id', 'desc').limit(filter.limit ?? 100).execute()).map(toIncident);
  }
}

export function toIncident(r: Selectable<EventTable>): Incident {
  const details = r.details === null ? null : (JSON.parse(r.details) as Record<string, unknown>);
  return {
    id: r.id, kind: r.kind, severity: r.severity as IncidentSeverity, target: r.target, message: r.message,
    details, openedAt: r.opened_at, clearedAt: r.cleared_at, remedy: incidentRemedy({ kind: r.kind, target: r.target, details }),
  };
}

import type { StoreHandle } from '../store/store-handle.js';
import { IncidentRepo, type IncidentRecord } from '../store/repos/incident-repo.js';
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
  #incidents: IncidentRepo;
  #listeners: (() => void)[] = [];

  constructor(db: StoreHandle) {
    this.#incidents = new IncidentRepo(db);
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
  async raise(input: {
    kind: string;
    target: string;
    severity: IncidentSeverity;
    message: string;
    details?: Record<string, unknown>;
  }): Promise<{ incident: Incident; opened: boolean }> {
    const open = await this.openFor(input.kind, input.target);
    if (open) return { incident: open, opened: false };
    const row: IncidentRecord = {
      id: newShortId('evt'),
      kind: input.kind,
      severity: input.severity,
      target: input.target,
      message: input.message,
      details: input.details ?? null,
      openedAt: new Date().toISOString(),
      clearedAt: null,
    };
    await this.#incidents.insert(row);
    this.#notify();
    return { incident: toIncident(row), opened: true };
  }

  /**
   * Opens the incident, or rewrites the message and details of the one open (a condition that
   * lasts and changes, such as which VMs a saturated link leaves behind). An update is not a
   * transition: alerts fire when it opens and when it clears, not at each rewrite.
   */
  async raiseOrUpdate(input: {
    kind: string;
    target: string;
    severity: IncidentSeverity;
    message: string;
    details?: Record<string, unknown>;
  }): Promise<{ incident: Incident; opened: boolean }> {
    const r = await this.raise(input);
    if (r.opened) return r;
    await this.#incidents.updateOpen(input.kind, input.target, input.message, input.details ?? null);
    return { incident: { ...r.incident, message: input.message, details: input.details ?? null }, opened: false };
  }

  /** Clears the open incident of this kind for the target, if any; true if one was open. */
  async clear(kind: string, target: string): Promise<boolean> {
    const cleared = await this.#incidents.clearOpen(kind, target, new Date().toISOString());
    if (cleared) this.#notify();
    return cleared;
  }

  async openFor(kind: string, target: string): Promise<Incident | null> {
    const row = await this.#incidents.findOpen(kind, target);
    return row ? toIncident(row) : null;
  }

  /** Every open incident of `kind`, in no particular order. */
  async openOfKind(kind: string): Promise<Incident[]> {
    return (await this.#incidents.openOfKind(kind)).map(toIncident);
  }

  /** Open incidents per kind (the metrics' gauge). */
  async openCounts(): Promise<{ kind: string; count: number }[]> {
    return this.#incidents.openCounts();
  }

  /** Newest first. */
  async list(filter: { open?: boolean; target?: string; kind?: string; limit?: number } = {}): Promise<Incident[]> {
    return (await this.#incidents.list({ ...filter, limit: filter.limit ?? 100 })).map(toIncident);
  }
}

/** An incident as the API shows it: the stored record and what to do about it. */
export function toIncident(r: IncidentRecord): Incident {
  return { ...r, remedy: incidentRemedy({ kind: r.kind, target: r.target, details: r.details }) };
}

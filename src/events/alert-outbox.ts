import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { toIncident, type Incident } from './incident-log.js';
import { isSealed, type SecretBox } from '../core/secret-box.js';

export type AlertStatus = 'firing' | 'resolved';
export type DeliveryState = 'pending' | 'delivered' | 'failed' | 'skipped';

export interface WebhookConfig {
  url: string;
  configuredAt: string;
}

export interface DueDelivery {
  status: AlertStatus;
  attempts: number;
  incident: Incident;
}

export interface DeliveryView {
  incidentId: string;
  kind: string;
  target: string;
  status: AlertStatus;
  state: DeliveryState;
  attempts: number;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
}

export interface DeliverySummary {
  pending: number;
  delivered: number;
  failed: number;
  lastDeliveredAt: string | null;
  /** The newest delivery attempt that failed and is still pending or failed for good. */
  lastError: string | null;
  recent: DeliveryView[];
}

const URL_KEY = 'alerts.webhook-url';
const SINCE_KEY = 'alerts.webhook-configured-at';
/** The webhook URL may carry credentials (user:pw@, ?token=): it is kept sealed. */
const URL_PURPOSE = 'meta.alerts.webhook-url';

/**
 * The durable side of alert notifications. The events table is the source: every incident
 * that opened owes a 'firing' notification, every one that cleared a 'resolved' one. A
 * transition gets its alert_deliveries row (pending) on the notifier's next pass, and the
 * row is marked delivered only after the receiver said 2xx: a restart finds the rows it
 * still owes and never those it delivered. (A crash between the receiver's answer and that
 * mark repeats the one notification in flight: receivers may dedupe on incident id + status.)
 */
export class AlertOutbox {
  #db: Kysely<Database>;
  #box: SecretBox;

  constructor(db: Kysely<Database>, box: SecretBox) {
    this.#db = db;
    this.#box = box;
  }

  /** The receiver, its URL in clear (to post to; show it only through maskUrl). */
  async webhook(): Promise<WebhookConfig | null> {
    const rows = await this.#db.selectFrom('meta').selectAll().where('key', 'in', [URL_KEY, SINCE_KEY]).execute();
    const stored = rows.find((r) => r.key === URL_KEY)?.value;
    return stored ? { url: this.#box.openOrClear(URL_PURPOSE, stored), configuredAt: rows.find((r) => r.key === SINCE_KEY)?.value ?? '' } : null;
  }

  /** Upgrade: seals a URL stored in clear before sealing; true if there was one. */
  async sealClearWebhook(): Promise<boolean> {
    const row = await this.#db.selectFrom('meta').select('value').where('key', '=', URL_KEY).executeTakeFirst();
    if (!row || isSealed(row.value)) return false;
    await this.#db.updateTable('meta').set({ value: this.#box.seal(URL_PURPOSE, row.value) }).where('key', '=', URL_KEY).execute();
    return true;
  }

  /**
   * Sets the receiver. What already ended before there was one is history, not news: those
   * transitions are marked skipped. Incidents still open are announced to the new receiver.
   */
  async setWebhook(url: string): Promise<WebhookConfig> {
    const now = new Date().toISOString();
    await this.#db.transaction().execute(async (trx) => {
      if (!(await trx.selectFrom('meta').select('key').where('key', '=', URL_KEY).executeTakeFirst())) {
        await insertMissing(trx, 'firing', 'skipped', now, sql`e.cleared_at IS NOT NULL`);
        await insertMissing(trx, 'resolved', 'skipped', now, sql`e.cleared_at IS NOT NULL`);
      }
      for (const [key, value] of [[URL_KEY, this.#box.seal(URL_PURPOSE, url)], [SINCE_KEY, now]] as const) {
        await trx.insertInto('meta').values({ key, value }).onConflict((oc) => oc.column('key').doUpdateSet({ value })).execute();
      }
    });
    return { url, configuredAt: now };
  }

  /** Removes the receiver; what it still owed is dropped (marked skipped), not kept for a later one. */
  async clearWebhook(): Promise<boolean> {
    const had = (await this.webhook()) !== null;
    await this.#db.transaction().execute(async (trx) => {
      await trx.deleteFrom('meta').where('key', 'in', [URL_KEY, SINCE_KEY]).execute();
      await trx.updateTable('alert_deliveries').set({ state: 'skipped' }).where('state', '=', 'pending').execute();
    });
    return had;
  }

  /** Gives every transition without a row its pending row; returns how many were added. */
  async enqueueNew(): Promise<number> {
    const now = new Date().toISOString();
    const opened = await insertMissing(this.#db, 'firing', 'pending', now, sql`1 = 1`);
    const cleared = await insertMissing(this.#db, 'resolved', 'pending', now, sql`e.cleared_at IS NOT NULL`);
    return opened + cleared;
  }

  /**
   * Pending deliveries whose time has come, in the order the transitions happened. A
   * 'resolved' waits until its 'firing' is no longer pending: a receiver never hears that
   * an alert resolved before it heard that it fired.
   */
  async due(now: Date, limit: number): Promise<DueDelivery[]> {
    const rows = await this.#ready().innerJoin('events as e', 'e.id', 'd.incident_id')
      .selectAll('e').select(['d.status as d_status', 'd.attempts as d_attempts'])
      .where('d.next_attempt_at', '<=', now.toISOString())
      .orderBy(sql`CASE WHEN d.status = 'resolved' THEN e.cleared_at ELSE e.opened_at END`).orderBy('e.id').limit(limit).execute();
    return rows.map((r) => ({ status: r.d_status as AlertStatus, attempts: r.d_attempts, incident: toIncident(r) }));
  }

  /** When the earliest pending delivery may be tried, or null if none is pending. */
  async nextAttemptAt(): Promise<Date | null> {
    const r = await this.#ready().select((eb) => eb.fn.min('d.next_attempt_at').as('at')).executeTakeFirst();
    return r?.at ? new Date(r.at) : null;
  }

  /** Pending rows that may go (a 'resolved' whose 'firing' is still pending may not). */
  #ready() {
    return this.#db.selectFrom('alert_deliveries as d').where('d.state', '=', 'pending')
      .where((eb) => eb.or([
        eb('d.status', '=', 'firing'),
        eb.not(eb.exists(eb.selectFrom('alert_deliveries as f').select('f.incident_id')
          .whereRef('f.incident_id', '=', 'd.incident_id').where('f.status', '=', 'firing').where('f.state', '=', 'pending'))),
      ]));
  }

  async markDelivered(incidentId: string, status: AlertStatus): Promise<void> {
    await this.#db.updateTable('alert_deliveries').set((eb) => ({ state: 'delivered', attempts: eb('attempts', '+', 1), last_error: null, delivered_at: new Date().toISOString() }))
      .where('incident_id', '=', incidentId).where('status', '=', status).execute();
  }

  /** A failed try: retried at nextAttemptAt, or given up (failed) when the receiver refused it for good. */
  async markFailed(incidentId: string, status: AlertStatus, error: string, retryAt: Date | null): Promise<void> {
    await this.#db.updateTable('alert_deliveries').set((eb) => ({
      state: retryAt ? 'pending' : 'failed', attempts: eb('attempts', '+', 1), last_error: error,
      ...(retryAt ? { next_attempt_at: retryAt.toISOString() } : {}),
    })).where('incident_id', '=', incidentId).where('status', '=', status).execute();
  }

  async summary(recent = 20): Promise<DeliverySummary> {
    const counts = await this.#db.selectFrom('alert_deliveries').select(['state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('state').execute();
    const count = (s: DeliveryState): number => Number(counts.find((c) => c.state === s)?.n ?? 0);
    const last = await this.#db.selectFrom('alert_deliveries').select((eb) => eb.fn.max('delivered_at').as('at')).executeTakeFirst();
    const rows = await this.#db.selectFrom('alert_deliveries as d').innerJoin('events as e', 'e.id', 'd.incident_id')
      .select(['d.incident_id', 'd.status', 'd.state', 'd.attempts', 'd.last_error', 'd.next_attempt_at', 'd.delivered_at', 'd.created_at', 'e.kind', 'e.target'])
      .where('d.state', '!=', 'skipped').orderBy('d.created_at', 'desc').orderBy('d.incident_id', 'desc').limit(recent).execute();
    const views: DeliveryView[] = rows.map((r) => ({
      incidentId: r.incident_id, kind: r.kind, target: r.target, status: r.status as AlertStatus, state: r.state as DeliveryState, attempts: r.attempts,
      lastError: r.last_error, nextAttemptAt: r.state === 'pending' ? r.next_attempt_at : null, deliveredAt: r.delivered_at,
    }));
    return {
      pending: count('pending'), delivered: count('delivered'), failed: count('failed'), lastDeliveredAt: last?.at ?? null,
      lastError: views.find((v) => v.lastError !== null && v.state !== 'delivered')?.lastError ?? null, recent: views,
    };
  }
}

/** INSERT one row per event matching `where` that has no row for this status yet. */
async function insertMissing(db: Kysely<Database>, status: AlertStatus, state: DeliveryState, now: string, where: ReturnType<typeof sql>): Promise<number> {
  const r = await sql`INSERT INTO alert_deliveries (incident_id, status, state, attempts, last_error, next_attempt_at, created_at, delivered_at)
    SELECT e.id, ${status}, ${state}, 0, NULL, ${now}, ${now}, NULL FROM events e
    WHERE ${where} AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.incident_id = e.id AND d.status = ${status})`.execute(db);
  return Number(r.numAffectedRows ?? 0n);
}

import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { toIncidentRecord, type IncidentRecord } from './incident-repo.js';

export type AlertDeliveryStatus = 'firing' | 'resolved';
export type AlertDeliveryState = 'pending' | 'delivered' | 'failed' | 'skipped';

/** One alert_deliveries row with its incident's kind and target. */
export interface AlertDeliveryRecord {
  incidentId: string;
  kind: string;
  target: string;
  status: AlertDeliveryStatus;
  state: AlertDeliveryState;
  attempts: number;
  lastError: string | null;
  nextAttemptAt: string;
  deliveredAt: string | null;
}

/** The webhook as stored: its URL as written (sealed by the caller) and since when. */
export interface StoredWebhook {
  url: string;
  configuredAt: string;
}

const URL_KEY = 'alerts.webhook-url';
const SINCE_KEY = 'alerts.webhook-configured-at';

type Db = Kysely<Database> | Transaction<Database>;

/**
 * The alert outbox (events/alert-outbox.ts): the alert_deliveries table, one row per incident
 * transition owed to the webhook, and the webhook's setting in the meta table.
 */
export class AlertDeliveryRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async webhook(): Promise<StoredWebhook | null> {
    const rows = await this.#db.selectFrom('meta').selectAll().where('key', 'in', [URL_KEY, SINCE_KEY]).execute();
    const url = rows.find((r) => r.key === URL_KEY)?.value;
    return url ? { url, configuredAt: rows.find((r) => r.key === SINCE_KEY)?.value ?? '' } : null;
  }

  /** Rewrites the stored URL (the upgrade that seals one kept in clear). */
  async replaceWebhookUrl(url: string): Promise<void> {
    await this.#db.updateTable('meta').set({ value: url }).where('key', '=', URL_KEY).execute();
  }

  /**
   * Sets the webhook, in one transaction with its consequence: when there was none, every
   * transition that already ended gets a skipped row (history, not news for the new receiver).
   */
  async setWebhook(w: StoredWebhook): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      if (!(await trx.selectFrom('meta').select('key').where('key', '=', URL_KEY).executeTakeFirst())) {
        await insertMissing(trx, 'firing', 'skipped', w.configuredAt, true);
        await insertMissing(trx, 'resolved', 'skipped', w.configuredAt, true);
      }
      for (const [key, value] of [
        [URL_KEY, w.url],
        [SINCE_KEY, w.configuredAt],
      ] as const) {
        await trx
          .insertInto('meta')
          .values({ key, value })
          .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
          .execute();
      }
    });
  }

  /** Removes the webhook and, in the same transaction, drops what it still owed (marked skipped). */
  async clearWebhook(): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      await trx.deleteFrom('meta').where('key', 'in', [URL_KEY, SINCE_KEY]).execute();
      await trx.updateTable('alert_deliveries').set({ state: 'skipped' }).where('state', '=', 'pending').execute();
    });
  }

  /** Gives every incident transition without a row its pending row; returns how many were added. */
  async enqueueNew(at: string): Promise<number> {
    const opened = await insertMissing(this.#db, 'firing', 'pending', at, false);
    const cleared = await insertMissing(this.#db, 'resolved', 'pending', at, true);
    return opened + cleared;
  }

  /**
   * Pending deliveries that may go (see #ready) and whose time has come, in the order the
   * transitions happened, with their incidents.
   */
  async due(
    now: string,
    limit: number,
  ): Promise<{ status: AlertDeliveryStatus; attempts: number; incident: IncidentRecord }[]> {
    const rows = await this.#ready()
      .innerJoin('events as e', 'e.id', 'd.incident_id')
      .selectAll('e')
      .select(['d.status as d_status', 'd.attempts as d_attempts'])
      .where('d.next_attempt_at', '<=', now)
      .orderBy((eb) =>
        eb.case().when('d.status', '=', 'resolved').then(eb.ref('e.cleared_at')).else(eb.ref('e.opened_at')).end(),
      )
      .orderBy('e.id')
      .limit(limit)
      .execute();
    return rows.map((r) => ({
      status: r.d_status as AlertDeliveryStatus,
      attempts: r.d_attempts,
      incident: toIncidentRecord(r),
    }));
  }

  /** When the earliest delivery that may go is due, or null if none is pending. */
  async nextAttemptAt(): Promise<string | null> {
    const r = await this.#ready()
      .select((eb) => eb.fn.min('d.next_attempt_at').as('at'))
      .executeTakeFirst();
    return r?.at ?? null;
  }

  /** Pending rows that may go: a 'resolved' waits until its 'firing' is no longer pending. */
  #ready() {
    return this.#db
      .selectFrom('alert_deliveries as d')
      .where('d.state', '=', 'pending')
      .where((eb) =>
        eb.or([
          eb('d.status', '=', 'firing'),
          eb.not(
            eb.exists(
              eb
                .selectFrom('alert_deliveries as f')
                .select('f.incident_id')
                .whereRef('f.incident_id', '=', 'd.incident_id')
                .where('f.status', '=', 'firing')
                .where('f.state', '=', 'pending'),
            ),
          ),
        ]),
      );
  }

  /**
   * Takes a due delivery for one sender: compare-and-set of its next attempt time, from due
   * (at or before `now`) to `leaseUntil`. True for the one caller whose update found it still
   * pending and due; two notifiers on one database (two servers) never post the same one
   * together. A sender that dies holding it leaves it due again at `leaseUntil`.
   */
  async claim(incidentId: string, status: AlertDeliveryStatus, now: string, leaseUntil: string): Promise<boolean> {
    const r = await this.#db
      .updateTable('alert_deliveries')
      .set({ next_attempt_at: leaseUntil })
      .where('incident_id', '=', incidentId)
      .where('status', '=', status)
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', now)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * The receiver took it. Only a row still pending: one the webhook's removal marked skipped
   * meanwhile stays skipped. False when it was not pending.
   */
  async markDelivered(incidentId: string, status: AlertDeliveryStatus, at: string): Promise<boolean> {
    const r = await this.#db
      .updateTable('alert_deliveries')
      .set((eb) => ({ state: 'delivered', attempts: eb('attempts', '+', 1), last_error: null, delivered_at: at }))
      .where('incident_id', '=', incidentId)
      .where('status', '=', status)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * A failed try: pending again from retryAt, or failed for good when retryAt is null. Only a
   * row still pending: a skipped one (the webhook removed meanwhile) is never made pending again.
   */
  async markFailed(
    incidentId: string,
    status: AlertDeliveryStatus,
    error: string,
    retryAt: string | null,
  ): Promise<boolean> {
    const r = await this.#db
      .updateTable('alert_deliveries')
      .set((eb) => ({
        state: retryAt ? 'pending' : 'failed',
        attempts: eb('attempts', '+', 1),
        last_error: error,
        ...(retryAt ? { next_attempt_at: retryAt } : {}),
      }))
      .where('incident_id', '=', incidentId)
      .where('status', '=', status)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Rows per state. */
  async countsByState(): Promise<Map<string, number>> {
    const rows = await this.#db
      .selectFrom('alert_deliveries')
      .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('state')
      .execute();
    return new Map(rows.map((r) => [r.state, Number(r.n)]));
  }

  async lastDeliveredAt(): Promise<string | null> {
    const r = await this.#db
      .selectFrom('alert_deliveries')
      .select((eb) => eb.fn.max('delivered_at').as('at'))
      .executeTakeFirst();
    return r?.at ?? null;
  }

  /** The newest rows that were not skipped, newest first. */
  async recent(limit: number): Promise<AlertDeliveryRecord[]> {
    const rows = await this.#db
      .selectFrom('alert_deliveries as d')
      .innerJoin('events as e', 'e.id', 'd.incident_id')
      .select([
        'd.incident_id',
        'd.status',
        'd.state',
        'd.attempts',
        'd.last_error',
        'd.next_attempt_at',
        'd.delivered_at',
        'd.created_at',
        'e.kind',
        'e.target',
      ])
      .where('d.state', '!=', 'skipped')
      .orderBy('d.created_at', 'desc')
      .orderBy('d.incident_id', 'desc')
      .limit(limit)
      .execute();
    return rows.map((r) => ({
      incidentId: r.incident_id,
      kind: r.kind,
      target: r.target,
      status: r.status as AlertDeliveryStatus,
      state: r.state as AlertDeliveryState,
      attempts: r.attempts,
      lastError: r.last_error,
      nextAttemptAt: r.next_attempt_at,
      deliveredAt: r.delivered_at,
    }));
  }
}

/**
 * One row per incident that has none for this status yet (only cleared incidents when
 * `onlyCleared`): INSERT ... SELECT ... WHERE NOT EXISTS. ON CONFLICT DO NOTHING: on a store
 * with concurrent writers (PostgreSQL) two passes may both see a row missing; the second adds
 * nothing instead of failing on the primary key. (The SELECT has a WHERE, which SQLite needs
 * to read ON CONFLICT after it.)
 */
async function insertMissing(
  db: Db,
  status: AlertDeliveryStatus,
  state: AlertDeliveryState,
  now: string,
  onlyCleared: boolean,
): Promise<number> {
  let missing = db
    .selectFrom('events as e')
    .select((eb) => [
      'e.id',
      eb.val(status).as('status'),
      eb.val(state).as('state'),
      eb.lit(0).as('attempts'),
      eb.lit(null).as('last_error'),
      eb.val(now).as('next_attempt_at'),
      eb.val(now).as('created_at'),
      eb.lit(null).as('delivered_at'),
    ])
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('alert_deliveries as d')
            .select('d.incident_id')
            .whereRef('d.incident_id', '=', 'e.id')
            .where('d.status', '=', status),
        ),
      ),
    );
  if (onlyCleared) missing = missing.where('e.cleared_at', 'is not', null);
  const r = await db
    .insertInto('alert_deliveries')
    .columns([
      'incident_id',
      'status',
      'state',
      'attempts',
      'last_error',
      'next_attempt_at',
      'created_at',
      'delivered_at',
    ])
    .expression(missing)
    .onConflict((oc) => oc.columns(['incident_id', 'status']).doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n);
}

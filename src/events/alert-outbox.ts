import type { StoreHandle } from '../store/store-handle.js';
import { AlertDeliveryRepo } from '../store/repos/alert-delivery-repo.js';
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
  #deliveries: AlertDeliveryRepo;
  #box: SecretBox;

  constructor(db: StoreHandle, box: SecretBox) {
    this.#deliveries = new AlertDeliveryRepo(db);
    this.#box = box;
  }

  /** The receiver, its URL in clear (to post to; show it only through maskUrl). */
  async webhook(): Promise<WebhookConfig | null> {
    const stored = await this.#deliveries.webhook();
    return stored ? { url: this.#box.openOrClear(URL_PURPOSE, stored.url), configuredAt: stored.configuredAt } : null;
  }

  /** Upgrade: seals a URL stored in clear before sealing; true if there was one. */
  async sealClearWebhook(): Promise<boolean> {
    const stored = await this.#deliveries.webhook();
    if (!stored || isSealed(stored.url)) return false;
    await this.#deliveries.replaceWebhookUrl(this.#box.seal(URL_PURPOSE, stored.url));
    return true;
  }

  /**
   * Sets the receiver. What already ended before there was one is history, not news: those
   * transitions are marked skipped. Incidents still open are announced to the new receiver.
   */
  async setWebhook(url: string): Promise<WebhookConfig> {
    const now = new Date().toISOString();
    await this.#deliveries.setWebhook({ url: this.#box.seal(URL_PURPOSE, url), configuredAt: now });
    return { url, configuredAt: now };
  }

  /** Removes the receiver; what it still owed is dropped (marked skipped), not kept for a later one. */
  async clearWebhook(): Promise<boolean> {
    const had = (await this.webhook()) !== null;
    await this.#deliveries.clearWebhook();
    return had;
  }

  /** Gives every transition without a row its pending row; returns how many were added. */
  async enqueueNew(): Promise<number> {
    return this.#deliveries.enqueueNew(new Date().toISOString());
  }

  /**
   * Pending deliveries whose time has come, in the order the transitions happened. A
   * 'resolved' waits until its 'firing' is no longer pending: a receiver never hears that
   * an alert resolved before it heard that it fired.
   */
  async due(now: Date, limit: number): Promise<DueDelivery[]> {
    return (await this.#deliveries.due(now.toISOString(), limit)).map((d) => ({
      status: d.status,
      attempts: d.attempts,
      incident: toIncident(d.incident),
    }));
  }

  /** When the earliest pending delivery may be tried, or null if none is pending. */
  async nextAttemptAt(): Promise<Date | null> {
    const at = await this.#deliveries.nextAttemptAt();
    return at ? new Date(at) : null;
  }

  /**
   * Takes a due delivery for this sender until `leaseUntil` (compare-and-set): false when
   * another sender (a second server on the same database) took it first, or it is no longer due.
   */
  async claim(incidentId: string, status: AlertStatus, now: Date, leaseUntil: Date): Promise<boolean> {
    return this.#deliveries.claim(incidentId, status, now.toISOString(), leaseUntil.toISOString());
  }

  async markDelivered(incidentId: string, status: AlertStatus): Promise<void> {
    await this.#deliveries.markDelivered(incidentId, status, new Date().toISOString());
  }

  /** A failed try: retried at nextAttemptAt, or given up (failed) when the receiver refused it for good. */
  async markFailed(incidentId: string, status: AlertStatus, error: string, retryAt: Date | null): Promise<void> {
    await this.#deliveries.markFailed(incidentId, status, error, retryAt ? retryAt.toISOString() : null);
  }

  async summary(recent = 20): Promise<DeliverySummary> {
    const counts = await this.#deliveries.countsByState();
    const count = (s: DeliveryState): number => counts.get(s) ?? 0;
    const lastDeliveredAt = await this.#deliveries.lastDeliveredAt();
    const views: DeliveryView[] = (await this.#deliveries.recent(recent)).map((r) => ({
      ...r,
      nextAttemptAt: r.state === 'pending' ? r.nextAttemptAt : null,
    }));
    return {
      pending: count('pending'),
      delivered: count('delivered'),
      failed: count('failed'),
      lastDeliveredAt,
      lastError: views.find((v) => v.lastError !== null && v.state !== 'delivered')?.lastError ?? null,
      recent: views,
    };
  }
}

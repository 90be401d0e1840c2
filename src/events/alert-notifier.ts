import type { StoreHandle } from '../store/store-handle.js';
import type { Logger } from '../core/logger.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Incident, IncidentLog } from './incident-log.js';
import { AlertOutbox, type AlertStatus, type DeliverySummary, type WebhookConfig } from './alert-outbox.js';
import { parseWebhookUrl, postWebhook, WebhookPostError } from './alert-webhook.js';
import type { SecretBox } from '../core/secret-box.js';
import { maskUrl } from '../core/mask-url.js';

/** What the receiver gets (Alertmanager-like: one alert per POST). */
export interface AlertBody {
  status: AlertStatus;
  incident: Incident;
  site: string;
}

export interface AlertNotifierOptions {
  /** Deadline of one POST. */
  timeoutMs?: number;
  /** First retry after this; doubled each failure up to retryMaxMs. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** A pass runs at least this often even without a nudge (a safety net for missed ones). */
  pollMs?: number;
}

const BATCH = 50;

/**
 * Posts each incident transition to the configured webhook once: 'firing' when it opened,
 * 'resolved' when it cleared. Runs in the background: the code that raised an incident only
 * nudges it (IncidentLog.onTransition) and never waits for a receiver. Failed posts are
 * retried with exponential backoff; what is owed survives restarts (AlertOutbox).
 */
export class AlertNotifier {
  #outbox: AlertOutbox;
  #siteName: string;
  #log: Logger;
  #timeoutMs: number;
  #retryBaseMs: number;
  #retryMaxMs: number;
  #pollMs: number;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #again = false;
  #stopped = true;

  constructor(
    deps: {
      db: StoreHandle;
      box: SecretBox;
      incidents: IncidentLog;
      siteName: string;
      log: Logger;
    } & AlertNotifierOptions,
  ) {
    this.#outbox = new AlertOutbox(deps.db, deps.box);
    this.#siteName = deps.siteName;
    this.#log = deps.log;
    this.#timeoutMs = deps.timeoutMs ?? 10_000;
    this.#retryBaseMs = deps.retryBaseMs ?? 2_000;
    this.#retryMaxMs = deps.retryMaxMs ?? 300_000;
    this.#pollMs = deps.pollMs ?? 30_000;
    deps.incidents.onTransition(() => this.kick());
  }

  start(): void {
    this.#stopped = false;
    this.kick();
  }

  /** Stops the loop and waits for the pass in flight (its POST ends within the timeout). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#running;
  }

  /** Runs a pass soon; a nudge during a pass runs another right after it. */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#running = this.#pass()
      .catch((e: unknown) => this.#log.error({ err: e }, 'alert notification pass failed'))
      .finally(() => {
        this.#running = null;
        if (this.#again) {
          this.#again = false;
          this.kick();
        } else void this.#arm();
      });
  }

  /** The receiver as shown: its URL masked (maskUrl), never with its credentials. */
  async webhook(): Promise<WebhookConfig | null> {
    const config = await this.#outbox.webhook();
    return config && { ...config, url: maskUrl(config.url) };
  }

  async setWebhook(text: unknown): Promise<WebhookConfig> {
    const url = parseWebhookUrl(text);
    const config = await this.#outbox.setWebhook(url.href);
    this.#log.info({ url: maskUrl(url.href) }, 'alert webhook set');
    this.kick();
    return { ...config, url: maskUrl(config.url) };
  }

  async clearWebhook(): Promise<boolean> {
    return this.#outbox.clearWebhook();
  }

  async deliveries(): Promise<DeliverySummary> {
    return this.#outbox.summary();
  }

  /** Posts a test alert now and waits for the answer (ALERT_WEBHOOK_FAILED with the reason). */
  async test(): Promise<{ url: string; delivered: true }> {
    const config = await this.#outbox.webhook();
    if (!config)
      throw new MamoriError(
        'ALERT_WEBHOOK_NOT_SET',
        "no alert webhook is set on this site; set one with 'mamori alerts webhook set URL'",
      );
    const now = new Date().toISOString();
    const incident: Incident = {
      id: 'test',
      kind: 'alert-test',
      severity: 'info',
      target: `site:${this.#siteName}`,
      message: `a test alert from mamori site ${this.#siteName}`,
      details: null,
      openedAt: now,
      clearedAt: null,
      remedy: null,
    };
    const shown = maskUrl(config.url);
    try {
      await postWebhook(
        new URL(config.url),
        { status: 'firing', incident, site: this.#siteName } satisfies AlertBody,
        this.#timeoutMs,
      );
    } catch (e) {
      throw new MamoriError('ALERT_WEBHOOK_FAILED', `the test alert did not reach ${shown}: ${(e as Error).message}`, {
        details: { url: shown },
      });
    }
    return { url: shown, delivered: true };
  }

  async #pass(): Promise<void> {
    const config = await this.#outbox.webhook();
    if (!config) return;
    await this.#outbox.enqueueNew();
    const url = new URL(config.url);
    for (;;) {
      const batch = await this.#outbox.due(new Date(), BATCH);
      if (batch.length === 0 || this.#stopped) return;
      for (const d of batch) {
        if (this.#stopped) return;
        // Another server on the same database may have taken it since the batch was read; the
        // lease outlasts one post, and frees the row again if this server dies during it.
        const now = new Date();
        const lease = new Date(now.getTime() + 2 * this.#timeoutMs + 5_000);
        if (!(await this.#outbox.claim(d.incident.id, d.status, now, lease))) continue;
        await this.#deliver(url, d.status, d.incident, d.attempts);
      }
      // A failed firing holds its resolved back; the next batch is only what is due now.
      if (batch.length < BATCH) return;
    }
  }

  async #deliver(url: URL, status: AlertStatus, incident: Incident, attempts: number): Promise<void> {
    // The firing body shows the incident as it was when it opened, even if it cleared since.
    const body: AlertBody = {
      status,
      incident: status === 'firing' ? { ...incident, clearedAt: null } : incident,
      site: this.#siteName,
    };
    try {
      await postWebhook(url, body, this.#timeoutMs);
      await this.#outbox.markDelivered(incident.id, status);
      this.#log.info({ incident: incident.id, kind: incident.kind, status }, 'alert delivered');
    } catch (e) {
      const permanent = e instanceof WebhookPostError && e.permanent;
      const retryAt = permanent
        ? null
        : new Date(Date.now() + Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** Math.min(attempts, 20)));
      await this.#outbox.markFailed(incident.id, status, (e as Error).message, retryAt);
      this.#log.warn(
        { incident: incident.id, status, err: (e as Error).message, retryAt },
        permanent ? 'alert refused by the webhook; not retried' : 'alert delivery failed; will retry',
      );
    }
  }

  /** Sleeps until the earliest retry or the poll interval, whichever comes first. */
  async #arm(): Promise<void> {
    if (this.#stopped) return;
    const next = await this.#outbox.nextAttemptAt().catch(() => null);
    if (this.#stopped || this.#running) return;
    // At least a few ms: a row that is due but was not taken must not spin the loop.
    const wait = Math.max(20, Math.min(this.#pollMs, next ? next.getTime() - Date.now() : this.#pollMs));
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.kick();
    }, wait);
    this.#timer.unref();
  }
}

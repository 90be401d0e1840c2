import type { Logger } from '../core/logger.js';
import type { IncidentLog } from '../events/incident-log.js';
import type { SitePeers } from './site-peers.js';
import type { PeerView } from './peer-record.js';
import { PEER_UNREACHABLE } from '../events/incident-kinds.js';

export { PEER_UNREACHABLE };
export const DEFAULT_PEER_CHECK_MS = 30_000;

/** What the watch knows of a paired site's reachability (ISO times; null: not seen). */
export interface PeerContact {
  /** When the last successful check ended. */
  lastReachableAt: string | null;
  /**
   * When the watch judged it gone: the end of the check that made `failuresBeforeRaise` failures
   * in a row after that success (as for the incident: one lost answer under load is not a site
   * gone). null while it answers.
   */
  unreachableSince: string | null;
}

/**
 * Checks every paired site's health on an interval and keeps one `site.peer-unreachable`
 * incident per peer (target `site:<name>`) open while it does not answer. It opens after
 * `failuresBeforeRaise` checks in a row failed, so one lost packet is not an alert, and
 * clears at the first answer. A peer we cannot call (it paired with us, we never paired
 * with it) is not checked.
 */
export class PeerWatch {
  #peers: Pick<SitePeers, 'list'>;
  #incidents: IncidentLog;
  #log: Logger;
  #intervalMs: number;
  #failuresBeforeRaise: number;
  #failures = new Map<string, number>();
  #contact = new Map<string, PeerContact>();
  #timer: NodeJS.Timeout | null = null;
  #inFlight: Promise<void> | null = null;
  #stopped = true;

  constructor(deps: {
    peers: Pick<SitePeers, 'list'>;
    incidents: IncidentLog;
    log: Logger;
    intervalMs?: number;
    failuresBeforeRaise?: number;
  }) {
    this.#peers = deps.peers;
    this.#incidents = deps.incidents;
    this.#log = deps.log;
    this.#intervalMs = deps.intervalMs ?? DEFAULT_PEER_CHECK_MS;
    this.#failuresBeforeRaise = Math.max(1, deps.failuresBeforeRaise ?? 2);
  }

  start(): void {
    this.#stopped = false;
    this.#arm();
  }

  /** Stops the interval and waits for a round in flight (the store closes after this). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#inFlight;
  }

  /**
   * When `peer` last answered a check, and when the checks after that judged it gone (the end
   * of each check: a failure is only known once its deadline passed). Kept in memory: after a
   * server restart nothing is known until the next rounds, and a data-loss bound falls back
   * to the run's start.
   */
  contact(peer: string): PeerContact | null {
    return this.#contact.get(peer) ?? null;
  }

  /** One round: every peer probed in parallel (each with the short health deadline). */
  async checkOnce(): Promise<void> {
    const peers = await this.#peers.list({ check: true });
    const endedAt = new Date().toISOString();
    for (const p of peers) {
      await this.#note(p);
      this.#noteContact(p, endedAt);
    }
    // Incidents of peers unpaired since: nothing is left to be unreachable.
    const names = new Set(peers.map((p) => `site:${p.name}`));
    for (const i of await this.#incidents.list({ open: true, kind: PEER_UNREACHABLE })) {
      if (!names.has(i.target)) await this.#incidents.clear(PEER_UNREACHABLE, i.target);
    }
  }

  /** After #note, which counted the failures in a row. */
  #noteContact(p: PeerView, endedAt: string): void {
    const prev = this.#contact.get(p.name) ?? { lastReachableAt: null, unreachableSince: null };
    if (p.status.state === 'reachable') this.#contact.set(p.name, { lastReachableAt: endedAt, unreachableSince: null });
    else if (
      (p.status.state === 'unreachable' || p.status.state === 'cert-mismatch') &&
      (this.#failures.get(p.name) ?? 0) >= this.#failuresBeforeRaise
    ) {
      this.#contact.set(p.name, { ...prev, unreachableSince: prev.unreachableSince ?? endedAt });
    }
  }

  async #note(p: PeerView): Promise<void> {
    const target = `site:${p.name}`;
    const { state, error } = p.status;
    if (state === 'reachable' || state === 'not-callable' || state === 'not-checked') {
      this.#failures.delete(p.name);
      if (await this.#incidents.clear(PEER_UNREACHABLE, target))
        this.#log.info({ peer: p.name }, 'peer site answers again; incident cleared');
      return;
    }
    const failures = (this.#failures.get(p.name) ?? 0) + 1;
    this.#failures.set(p.name, failures);
    if (failures < this.#failuresBeforeRaise) return;
    const { opened, incident } = await this.#incidents.raise({
      kind: PEER_UNREACHABLE,
      target,
      severity: 'critical',
      message: `paired site ${p.name} (${p.url}) does not answer: ${error?.message ?? state}; replication to it and recovery plans with it wait until it does`,
      details: { peer: p.name, url: p.url, state, error },
    });
    if (opened) this.#log.warn({ peer: p.name, incident: incident.id, err: error }, 'peer site unreachable');
  }

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#inFlight = this.checkOnce()
        .catch((e: unknown) => this.#log.error({ err: e }, 'peer health check failed'))
        .finally(() => {
          this.#inFlight = null;
          this.#arm();
        });
    }, this.#intervalMs);
    this.#timer.unref();
  }
}

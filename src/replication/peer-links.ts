import { MamoriError } from '../core/mamori-error.js';
import { DEFAULT_LINK_CONCURRENCY, type PeerLink, type PeerRecord } from '../store/records/peer-record.js';
import {
  LINK_LIMITS,
  linkRateAt,
  parseBandwidthSchedule,
  parseLinkBandwidth,
  type ScheduleWindow,
} from './bandwidth-schedule.js';
import { LinkBudget, REAL_CLOCK, type BudgetClock, type LinkSender } from './link-budget.js';

/** What `mamori site link PEER` changes; a field left out stays as it was. */
export interface LinkInput {
  /** "50M" (Mbit/s), or "none" (no cap, and no schedule). */
  bandwidth?: string;
  /** "Mon-Fri 08:00-18:00,...", or "none" (the cap applies always). */
  schedule?: string;
  concurrency?: number;
}

export interface LinkView {
  bitsPerSecond: number | null;
  schedule: string | null;
  concurrency: number;
}

/** The slice of SitePeers the links read and write. */
export interface LinkRepo {
  records(): Promise<PeerRecord[]>;
  /** PEER_NOT_FOUND for a name not paired. */
  record(name: string): Promise<PeerRecord>;
  setLink(name: string, link: PeerLink): Promise<void>;
}

interface LinkState {
  stored: PeerLink;
  windows: ScheduleWindow[] | null;
  budget: LinkBudget | null;
}

/**
 * The replication budget of each peer link, as the scheduler reads it: cycles in flight
 * allowed, and the shared bandwidth budget at the rate in force now (the schedule is read
 * at each refill). Settings are cached from the peers table (read at start, written through
 * here), so the queue asks for a link's limit without a query per decision.
 */
export class PeerLinks {
  readonly #repo: LinkRepo;
  readonly #clock: BudgetClock;
  readonly #links = new Map<string, LinkState>();

  constructor(deps: { repo: LinkRepo; clock?: BudgetClock }) {
    this.#repo = deps.repo;
    this.#clock = deps.clock ?? REAL_CLOCK;
  }

  /** At start: every peer's settings. */
  async load(): Promise<void> {
    for (const p of await this.#repo.records()) this.#cache(p.name, p.link ?? NO_LINK);
  }

  concurrency(peer: string): number {
    return this.#links.get(peer)?.stored.concurrency ?? DEFAULT_LINK_CONCURRENCY;
  }

  /** The cap on the link now, bytes per second; null: none (no cap, or outside its schedule). */
  rateNow(peer: string): number | null {
    const l = this.#links.get(peer);
    return l ? linkRateAt(l.stored, l.windows, new Date(this.#clock.now())) : null;
  }

  /**
   * A cycle's place on the link, capped alone at capBps (the replication's own limit); null
   * when neither the link nor the VM has a cap, so the copy runs at full speed in large chunks.
   * A link with a scheduled cap throttles every cycle, inside its windows or not: a long cycle
   * started at night must slow down when the window opens.
   */
  sender(peer: string, capBps: number | null): LinkSender | null {
    const l = this.#links.get(peer);
    const linkCapped = l !== undefined && l.stored.bitsPerSecond !== null;
    if (!linkCapped && capBps === null) return null;
    if (!l) return new LinkBudget(() => null, this.#clock).open(capBps);
    l.budget ??= new LinkBudget(() => this.rateNow(peer), this.#clock);
    return l.budget.open(capBps);
  }

  /** Whether the link's cap made a cycle wait at or after `since` (clock ms). */
  throttledSince(peer: string, since: number): boolean {
    const at = this.#links.get(peer)?.budget?.throttledAt ?? null;
    return at !== null && at >= since;
  }

  view(peer: string): LinkView {
    const s = this.#links.get(peer)?.stored ?? NO_LINK;
    return { bitsPerSecond: s.bitsPerSecond, schedule: s.schedule, concurrency: this.concurrency(peer) };
  }

  /** Validates and stores a change to a peer's link; PEER_NOT_FOUND for a name not paired. */
  async set(peer: string, input: LinkInput): Promise<LinkView> {
    const rec = await this.#repo.record(peer);
    const next = nextLink(rec.link ?? NO_LINK, input);
    await this.#repo.setLink(peer, next);
    this.#cache(peer, next);
    return this.view(peer);
  }

  #cache(peer: string, link: PeerLink): void {
    const windows = link.schedule === null ? null : windowsOrAlways(link.schedule);
    const was = this.#links.get(peer);
    // Cycles already on the link keep their budget: it reads the new rate at its next refill.
    this.#links.set(peer, { stored: link, windows, budget: was?.budget ?? null });
  }
}

/**
 * A stored schedule was checked when set; one that no longer parses (edited in the database,
 * or written by a version whose syntax this one lacks) must not stop the server: the cap then
 * applies at all hours, the safe side for a link someone chose to cap.
 */
function windowsOrAlways(schedule: string): ScheduleWindow[] | null {
  try {
    return parseBandwidthSchedule(schedule);
  } catch {
    return null;
  }
}

const NO_LINK: PeerLink = { bitsPerSecond: null, schedule: null, concurrency: null };

/** The link after a change, checked whole: every field parsed strictly, a schedule only with a cap. */
export function nextLink(current: PeerLink, input: LinkInput): PeerLink {
  if (input.bandwidth === undefined && input.schedule === undefined && input.concurrency === undefined)
    throw new MamoriError(
      'INVALID_INPUT',
      "nothing to change: give --bandwidth, --schedule or --concurrency (e.g. 'mamori site link site-b --bandwidth 50M')",
    );
  const next: PeerLink = { ...current };
  if (input.bandwidth !== undefined) {
    next.bitsPerSecond = parseLinkBandwidth(input.bandwidth);
    // No cap: a schedule would say when nothing applies.
    if (next.bitsPerSecond === null) next.schedule = null;
  }
  if (input.schedule !== undefined) {
    const text = input.schedule.trim();
    if (text.toLowerCase() === 'none') next.schedule = null;
    else {
      parseBandwidthSchedule(text);
      next.schedule = text;
    }
  }
  if (next.schedule !== null && next.bitsPerSecond === null)
    throw new MamoriError(
      'INVALID_INPUT',
      'a schedule says when the bandwidth cap applies, and this link has none: give --bandwidth too (e.g. --bandwidth 50M)',
    );
  if (input.concurrency !== undefined) {
    const n = input.concurrency;
    if (!Number.isInteger(n) || n < 1 || n > LINK_LIMITS.maxConcurrency)
      throw new MamoriError('OUT_OF_RANGE', `concurrency must be 1 to ${LINK_LIMITS.maxConcurrency} cycles in flight`, {
        details: { concurrency: n },
      });
    next.concurrency = n;
  }
  return next;
}

import type { Logger } from '../core/logger.js';
import type { ReplicationRepo } from '../store/repos/replication-repo.js';
import type { ReplicationRecord } from '../store/records/replica-record.js';
import { CycleSchedule } from './cycle-schedule.js';
import { behindOnLink, nextLateAt } from './link-saturation.js';
import type { LinkSender } from './link-budget.js';
import { PeerLinks, type LinkInput, type LinkRepo, type LinkView } from './peer-links.js';
import type { ReplicationIncidents } from './replication-incidents.js';
import { expectedCycleMs } from './rpo-scheduler.js';
import { SiteCycleQueue, type QueuePlace } from './site-cycle-queue.js';

/** How often a link with VMs waiting is checked for saturation between queue changes (lags grow meanwhile). */
const SATURATION_CHECK_MS = 5_000;
/**
 * How long a saturated link must keep up before its incident clears: a link at the edge of
 * its load drains its queue between two bursts, and an incident (and its alert) that opened
 * and cleared with each would be noise the person on call learns to ignore.
 */
export const SATURATION_CLEAR_MS = 30_000;

/**
 * The site's replication scheduler: each enabled replication's timer (CycleSchedule, as its
 * RPO asks) makes its VM due; the queue starts due cycles within each peer link's limit, the
 * VM nearest to breaking its RPO first; each cycle sends within its link's fair share of the
 * bandwidth in force (PeerLinks); and a link that cannot keep up raises one incident saying
 * which VMs are behind. ReplicationService says what changed (enable, pause, a cycle ran).
 */
export class SiteScheduler {
  readonly links: PeerLinks;
  readonly #repo: ReplicationRepo;
  readonly #incidents: ReplicationIncidents;
  readonly #log: Logger;
  readonly #vmName: (vmId: string) => Promise<string>;
  readonly #timers: CycleSchedule;
  readonly #queue: SiteCycleQueue;
  /** Peers whose last check found VMs behind: checked again until they are not. */
  readonly #behind = new Set<string>();
  /** Saturated peers that keep up again, since when (cleared after SATURATION_CLEAR_MS). */
  readonly #keptUpSince = new Map<string, number>();
  #clearCheck: NodeJS.Timeout | null = null;
  /** A check at the next instant a waiting VM falls behind (nextLateAt). */
  #lateCheck: NodeJS.Timeout | null = null;
  #checkQueued = false;
  #watch: NodeJS.Timeout | null = null;
  #stopped = false;

  constructor(deps: {
    repo: ReplicationRepo;
    peers: LinkRepo;
    incidents: ReplicationIncidents;
    log: Logger;
    /** Runs one scheduled cycle of the VM (CycleRunner.run(vmId, false)). */
    run: (vmId: string) => Promise<void>;
    vmName: (vmId: string) => Promise<string>;
  }) {
    this.#vmName = deps.vmName;
    this.#repo = deps.repo;
    this.#incidents = deps.incidents;
    this.#log = deps.log;
    this.links = new PeerLinks({ repo: deps.peers });
    this.#timers = new CycleSchedule({ repo: deps.repo, fire: (vmId) => this.#due(vmId) });
    this.#queue = new SiteCycleQueue({
      limit: (peer) => this.links.concurrency(peer),
      start: deps.run,
      changed: () => this.#checkSoon(),
    });
  }

  /** At server start: the links' settings, then every enabled replication's timer as its RPO asks. */
  async start(): Promise<void> {
    this.#stopped = false;
    await this.links.load();
    for (const vmId of await this.#repo.enabledVmIds()) await this.#timers.fromRow(vmId, Date.now());
  }

  /** Re-arms the VM's timer from its row (after a cycle ran, or a failed disable). */
  fromRow(vmId: string, now: number): Promise<void> {
    return this.#timers.fromRow(vmId, now);
  }

  /** The VM is due at `at` (epoch ms): now for a new or resumed replication. */
  at(vmId: string, at: number): void {
    this.#timers.at(vmId, at);
  }

  /** No cycle of the VM is scheduled or waits any longer (paused, disabled). */
  cancel(vmId: string): void {
    this.#timers.cancel(vmId);
    this.#queue.remove(vmId);
  }

  /** A manual cycle: runs at once, counted in flight on its link; the VM's queued cycle is dropped. */
  runNow<T>(vmId: string, peer: string, fn: () => Promise<T>): Promise<T> {
    return this.#queue.runNow(vmId, peer, fn);
  }

  /** A cycle's throttle on its link; null when neither the link nor the VM caps it. */
  sender(row: ReplicationRecord): LinkSender | null {
    return this.links.sender(row.peer, row.bandwidthBps);
  }

  setLink(peer: string, input: LinkInput): Promise<LinkView> {
    return this.links.set(peer, input).then((v) => {
      // A higher limit may start waiting cycles now.
      this.#queue.pump();
      this.#checkSoon();
      return v;
    });
  }

  place(vmId: string): QueuePlace {
    return this.#queue.place(vmId);
  }

  nextAt(vmId: string): number | undefined {
    return this.#timers.nextAt(vmId);
  }

  stop(): void {
    this.#stopped = true;
    this.#timers.stop();
    this.#queue.stop();
    if (this.#watch) clearInterval(this.#watch);
    this.#watch = null;
    if (this.#clearCheck) clearTimeout(this.#clearCheck);
    this.#clearCheck = null;
    if (this.#lateCheck) clearTimeout(this.#lateCheck);
    this.#lateCheck = null;
  }

  /** The VM's timer fired: it joins the queue with what orders it (its RPO, newest point, cycle time). */
  async #due(vmId: string): Promise<void> {
    const row = await this.#repo.find(vmId);
    if (!row || row.state !== 'enabled' || this.#stopped) return;
    this.#queue.due({
      vmId,
      vmName: await this.#vmName(vmId).catch(() => vmId),
      peer: row.peer,
      rpoMs: row.rpoMs,
      lastPointAt: row.lastPointAt ? Date.parse(row.lastPointAt) : null,
      expectedMs: expectedCycleMs(row.stats.map((s) => s.durationMs)),
      dueAt: Date.now(),
    });
  }

  /** A saturated link keeps up now: its incident clears once it has for SATURATION_CLEAR_MS. */
  async #keptUp(peer: string, now: number): Promise<void> {
    const since = this.#keptUpSince.get(peer) ?? now;
    this.#keptUpSince.set(peer, since);
    if (now - since < SATURATION_CLEAR_MS) {
      // Nothing may change in the queue meanwhile: look again when the time is up.
      this.#clearCheck ??= setTimeout(
        () => {
          this.#clearCheck = null;
          this.#checkSoon();
        },
        since + SATURATION_CLEAR_MS - now,
      );
      this.#clearCheck.unref();
      return;
    }
    this.#behind.delete(peer);
    this.#keptUpSince.delete(peer);
    await this.#incidents.linkSaturation({
      peer,
      limit: 0,
      queued: 0,
      behind: [],
      bitsPerSecond: null,
      limitedBy: 'concurrency',
      now,
    });
  }

  /** Coalesces the queue's changes into one saturation check. */
  #checkSoon(): void {
    if (this.#checkQueued || this.#stopped) return;
    this.#checkQueued = true;
    setImmediate(() => {
      this.#checkQueued = false;
      void this.#checkLinks().catch((e: unknown) => this.#log.error({ err: e }, 'link saturation check failed'));
    });
  }

  async #checkLinks(): Promise<void> {
    const now = Date.now();
    const links = this.#queue.links();
    const seen = new Set<string>();
    for (const link of links) {
      seen.add(link.peer);
      const behind = behindOnLink(link, now);
      if (behind.length === 0) {
        if (this.#behind.has(link.peer)) await this.#keptUp(link.peer, now);
        continue;
      }
      this.#behind.add(link.peer);
      this.#keptUpSince.delete(link.peer);
      const rate = this.links.rateNow(link.peer);
      await this.#incidents.linkSaturation({
        peer: link.peer,
        limit: link.limit,
        queued: link.queued.length,
        behind,
        bitsPerSecond: rate === null ? null : rate * 8,
        // The cap made a cycle wait within the last two checks: that is what holds it back.
        limitedBy:
          rate !== null && this.links.throttledSince(link.peer, now - 2 * SATURATION_CHECK_MS)
            ? 'bandwidth'
            : 'concurrency',
        now,
      });
    }
    // A link whose queue emptied keeps up again.
    for (const peer of [...this.#behind].filter((p) => !seen.has(p))) await this.#keptUp(peer, now);
    // Look again the moment a waiting VM falls behind, not only at the next queue change or tick.
    const late = links.map((l) => nextLateAt(l, now)).filter((t): t is number => t !== null);
    if (this.#lateCheck) clearTimeout(this.#lateCheck);
    this.#lateCheck = null;
    if (late.length > 0 && !this.#stopped) {
      this.#lateCheck = setTimeout(
        () => {
          this.#lateCheck = null;
          this.#checkSoon();
        },
        Math.min(...late) - now + 1,
      );
      this.#lateCheck.unref();
    }
    // While VMs wait, their lags grow without the queue changing: look again soon.
    const waiting = links.some((l) => l.queued.length > 0);
    if (waiting && !this.#watch && !this.#stopped) {
      this.#watch = setInterval(() => this.#checkSoon(), SATURATION_CHECK_MS);
      this.#watch.unref();
    } else if (!waiting && this.#watch) {
      clearInterval(this.#watch);
      this.#watch = null;
    }
  }
}

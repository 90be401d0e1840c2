/** A VM whose scheduled cycle is due (its timer fired), as the queue orders it. */
export interface DueCycle {
  vmId: string;
  vmName: string;
  /** The peer link the cycle sends on. */
  peer: string;
  rpoMs: number;
  /** Fleecing instant of the newest point (epoch ms); null before the first. */
  lastPointAt: number | null;
  /** How long its cycles take (rpo-scheduler's expectedCycleMs). */
  expectedMs: number;
  /** When it became due (epoch ms). */
  dueAt: number;
}

/**
 * How long a due VM may still wait before its next point would come too late: the instant
 * its point leaves the RPO, less now, less how long its cycle takes. Negative: it is already
 * late. A VM with no point yet has no slack at all (it has no recovery point to fall back on).
 */
export function slackMs(c: Pick<DueCycle, 'rpoMs' | 'lastPointAt' | 'expectedMs'>, now: number): number {
  if (c.lastPointAt === null) return -Infinity;
  return c.lastPointAt + c.rpoMs - now - c.expectedMs;
}

/** Due cycles in the order they start: least slack first, then the longest due, then by id (stable). */
export function queueOrder(due: readonly DueCycle[], now: number): DueCycle[] {
  return [...due].sort(
    (a, b) =>
      compare(slackMs(a, now), slackMs(b, now)) ||
      compare(a.dueAt, b.dueAt) ||
      (a.vmId < b.vmId ? -1 : a.vmId > b.vmId ? 1 : 0),
  );
}

function compare(x: number, y: number): number {
  return x === y ? 0 : x < y ? -1 : 1;
}

/** Where a VM stands in the queue: running, queued at a place (1 = next on its link), or neither. */
export interface QueuePlace {
  running: boolean;
  /** 1-based place among the due VMs of its peer link; null when not queued. */
  place: number | null;
}

/** One peer link's queue at an instant: what runs, what waits in order (for status and alerts). */
export interface LinkQueueState {
  peer: string;
  limit: number;
  /** Cycles in flight on the link, manual ones included. */
  inFlight: number;
  /** The scheduled cycles running, as they were when they started. */
  running: readonly DueCycle[];
  queued: readonly DueCycle[];
}

/**
 * The site's replication cycles across VMs: timers make a VM due, and this starts due cycles
 * while each peer link has fewer than its limit in flight, the VM nearest to breaking its RPO
 * first. Manual cycles (replicate sync-now, a final sync) start at once but count as in
 * flight, so scheduled ones wait for them. Invariant: the scheduled cycles started on a link
 * never bring its in-flight count above its limit, and one VM never has two cycles started by
 * the queue at once (a VM due while its cycle runs waits for that cycle to end).
 */
export class SiteCycleQueue {
  readonly #limit: (peer: string) => number;
  readonly #start: (vmId: string) => Promise<void>;
  readonly #changed: () => void;
  readonly #now: () => number;
  readonly #due = new Map<string, DueCycle>();
  /** VM id -> its scheduled cycle running now. */
  readonly #running = new Map<string, DueCycle>();
  readonly #inFlight = new Map<string, number>();
  /** VMs whose manual cycle runs now. */
  readonly #manual = new Set<string>();
  #stopped = false;

  constructor(deps: {
    /** Cycles in flight a peer link allows (at least 1). */
    limit: (peer: string) => number;
    /** Runs the VM's scheduled cycle; its failure is the cycle's to record. */
    start: (vmId: string) => Promise<void>;
    /** Told after the queue changed (a VM due, started, ended), to re-check saturation. */
    changed?: () => void;
    now?: () => number;
  }) {
    this.#limit = deps.limit;
    this.#start = deps.start;
    this.#changed = deps.changed ?? (() => undefined);
    this.#now = deps.now ?? Date.now;
  }

  /** The VM's cycle is due: queued (replacing what was queued for it), started if its link has room. */
  due(c: DueCycle): void {
    if (this.#stopped) return;
    const was = this.#due.get(c.vmId);
    this.#due.set(c.vmId, was ? { ...c, dueAt: Math.min(was.dueAt, c.dueAt) } : c);
    this.pump();
    this.#changed();
  }

  /** The VM no longer waits (paused, disabled, or a manual cycle takes its place). */
  remove(vmId: string): void {
    if (this.#due.delete(vmId)) this.#changed();
  }

  /**
   * Runs a manual cycle at once, counted in flight on its link while it runs; the VM's queued
   * cycle, if any, is dropped (this one takes its point; its end re-arms the timer).
   */
  async runNow<T>(vmId: string, peer: string, fn: () => Promise<T>): Promise<T> {
    this.remove(vmId);
    this.#add(peer, 1);
    this.#manual.add(vmId);
    try {
      return await fn();
    } finally {
      this.#manual.delete(vmId);
      this.#add(peer, -1);
      this.pump();
      this.#changed();
    }
  }

  /** Starts due cycles while their links have room. */
  pump(): void {
    if (this.#stopped) return;
    const now = this.#now();
    for (const c of queueOrder([...this.#due.values()], now)) {
      if (this.#running.has(c.vmId)) continue;
      if ((this.#inFlight.get(c.peer) ?? 0) >= Math.max(1, this.#limit(c.peer))) continue;
      this.#due.delete(c.vmId);
      this.#running.set(c.vmId, c);
      this.#add(c.peer, 1);
      void this.#start(c.vmId)
        .catch(() => undefined)
        .finally(() => {
          this.#running.delete(c.vmId);
          this.#add(c.peer, -1);
          this.pump();
          this.#changed();
        });
    }
  }

  place(vmId: string): QueuePlace {
    const running = this.#running.has(vmId) || this.#manual.has(vmId);
    const c = this.#due.get(vmId);
    if (!c) return { running, place: null };
    const order = queueOrder(
      [...this.#due.values()].filter((d) => d.peer === c.peer),
      this.#now(),
    );
    return { running, place: order.findIndex((d) => d.vmId === vmId) + 1 };
  }

  /** Every link with something running or queued. */
  links(): LinkQueueState[] {
    const peers = new Set([...this.#running.values(), ...this.#due.values()].map((c) => c.peer));
    const now = this.#now();
    return [...peers].sort().map((peer) => ({
      peer,
      limit: Math.max(1, this.#limit(peer)),
      inFlight: this.inFlight(peer),
      running: [...this.#running.values()].filter((c) => c.peer === peer),
      queued: queueOrder(
        [...this.#due.values()].filter((c) => c.peer === peer),
        now,
      ),
    }));
  }

  /** Cycles in flight on a link now, manual ones included. */
  inFlight(peer: string): number {
    return this.#inFlight.get(peer) ?? 0;
  }

  /** No cycle starts after this; those running end on their own. */
  stop(): void {
    this.#stopped = true;
    this.#due.clear();
  }

  #add(peer: string, n: number): void {
    const v = (this.#inFlight.get(peer) ?? 0) + n;
    if (v <= 0) this.#inFlight.delete(peer);
    else this.#inFlight.set(peer, v);
  }
}

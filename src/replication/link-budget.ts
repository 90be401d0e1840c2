/**
 * Awaited before each write of a cycle's data to the recovery site: resolves when the
 * bytes may go. A cycle with none sends as fast as the wire takes it.
 */
export type WriteThrottle = (bytes: number) => Promise<void>;

/** Time for the budget: the real clock in the server, a fake one in tests. */
export interface BudgetClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const REAL_CLOCK: BudgetClock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** One cycle's place on the link: its throttle, and close() when the cycle ends. */
export interface LinkSender {
  readonly throttle: WriteThrottle;
  close(): void;
}

/** What the link may hold unsent: a short burst, so an idle link does not save up a flood. */
const BURST_SECONDS = 0.1;
/** The longest the budget sleeps before reading the rate again (a schedule window may open or close). */
const MAX_SLEEP_MS = 1000;

interface Waiter {
  sender: SenderState;
  bytes: number;
  /** Start tag (start-time fair queuing): when, in the link's virtual bytes, this request may begin. */
  start: number;
  resolve: () => void;
}

interface SenderState {
  /** The virtual finish of its last request: its next one starts no earlier. */
  finish: number;
  queue: Waiter[];
  closed: boolean;
}

/**
 * A peer link's bandwidth, shared max-min fairly among the cycles sending on it now.
 *
 * One token bucket refilled at the link's current rate (read at each refill, so a schedule
 * takes effect mid-cycle); writes wait in a start-time fair queue: each request is tagged
 * with max(link's virtual time, its sender's last finish) and the smallest tag goes next.
 * A sender that asks for less than its share (its own cap, or a cycle busy reading) has no
 * request waiting, so the others take what it leaves: max-min fair. Invariant: over any span
 * the bytes granted are at most rate * span + one burst + one request (the bucket may go
 * below zero by one request, which the next grant waits out). Each sender's own cap (the
 * replication's bandwidthBps) is a bucket of its own, passed before the shared one.
 */
export class LinkBudget {
  readonly #rate: () => number | null;
  readonly #clock: BudgetClock;
  #tokens = 0;
  #lastRefill: number;
  #virtual = 0;
  readonly #senders = new Set<SenderState>();
  #pumping = false;
  #throttledAt: number | null = null;

  /** rate: the link's bytes per second now; null: no cap. */
  constructor(rate: () => number | null, clock: BudgetClock = REAL_CLOCK) {
    this.#rate = rate;
    this.#clock = clock;
    this.#lastRefill = clock.now();
  }

  /**
   * When the cap last made a write wait (clock ms; null: never): the bandwidth, not the number
   * of cycles in flight, was what held the link back then (link-saturation.ts says which).
   */
  get throttledAt(): number | null {
    return this.#throttledAt;
  }

  /** Cycles sending on the link now (open and not closed). */
  get senders(): number {
    return this.#senders.size;
  }

  /** A cycle joins the link; capBps (bytes per second) caps it alone, below its fair share. */
  open(capBps: number | null = null): LinkSender {
    const state: SenderState = { finish: this.#virtual, queue: [], closed: false };
    this.#senders.add(state);
    const own = capBps !== null && capBps > 0 ? new OwnCap(capBps, this.#clock) : null;
    return {
      throttle: async (bytes) => {
        if (state.closed || bytes <= 0) return;
        if (own) await own.take(bytes);
        await this.#take(state, bytes);
      },
      close: () => {
        state.closed = true;
        this.#senders.delete(state);
        // A closed cycle's waiting writes go at once: it is ending and must not hang on the link.
        for (const w of state.queue.splice(0)) w.resolve();
      },
    };
  }

  #take(sender: SenderState, bytes: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const start = Math.max(this.#virtual, sender.finish);
      sender.finish = start + bytes;
      sender.queue.push({ sender, bytes, start, resolve });
      this.#pump();
    });
  }

  #refill(rate: number): void {
    const now = this.#clock.now();
    const burst = Math.max(rate * BURST_SECONDS, 1);
    this.#tokens = Math.min(burst, this.#tokens + ((now - this.#lastRefill) * rate) / 1000);
    this.#lastRefill = now;
  }

  /** The head request with the smallest start tag; ties go to the sender waiting longest (set order). */
  #next(): Waiter | undefined {
    let best: Waiter | undefined;
    for (const s of this.#senders) {
      const head = s.queue[0];
      if (head && (best === undefined || head.start < best.start)) best = head;
    }
    return best;
  }

  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    void this.#drain().finally(() => {
      this.#pumping = false;
      if (this.#next()) this.#pump();
    });
  }

  async #drain(): Promise<void> {
    for (let w = this.#next(); w !== undefined; w = this.#next()) {
      const rate = this.#rate();
      if (rate === null || rate <= 0) {
        // No cap now: the bucket starts full when one comes back.
        this.#tokens = 0;
        this.#lastRefill = this.#clock.now();
        this.#grant(w);
        continue;
      }
      this.#refill(rate);
      if (this.#tokens > 0) {
        this.#tokens -= w.bytes;
        this.#grant(w);
        continue;
      }
      this.#throttledAt = this.#clock.now();
      await this.#clock.sleep(Math.min(MAX_SLEEP_MS, Math.max(1, Math.ceil((-this.#tokens * 1000) / rate) + 1)));
    }
  }

  #grant(w: Waiter): void {
    w.sender.queue.shift();
    this.#virtual = Math.max(this.#virtual, w.start);
    w.resolve();
  }
}

/** A sender's own cap: a bucket at capBps that may dip below zero by one request, as the link's. */
class OwnCap {
  readonly #bps: number;
  readonly #clock: BudgetClock;
  #tokens: number;
  #last: number;
  /** Writes of one sender pass its cap in order. */
  #tail: Promise<void> = Promise.resolve();

  constructor(bps: number, clock: BudgetClock) {
    this.#bps = bps;
    this.#clock = clock;
    this.#tokens = 0;
    this.#last = clock.now();
  }

  take(bytes: number): Promise<void> {
    const turn = this.#tail.then(async () => {
      for (;;) {
        const now = this.#clock.now();
        this.#tokens = Math.min(this.#bps * BURST_SECONDS, this.#tokens + ((now - this.#last) * this.#bps) / 1000);
        this.#last = now;
        if (this.#tokens > 0) {
          this.#tokens -= bytes;
          return;
        }
        await this.#clock.sleep(Math.max(1, Math.ceil((-this.#tokens * 1000) / this.#bps) + 1));
      }
    });
    this.#tail = turn;
    return turn;
  }
}

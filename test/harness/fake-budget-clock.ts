import type { BudgetClock } from '../../src/replication/link-budget.js';

/** A clock that moves only when the test says: sleepers wake in time order as it advances. */
export class FakeBudgetClock implements BudgetClock {
  #t = 0;
  #sleepers: { at: number; wake: () => void }[] = [];

  now(): number {
    return this.#t;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((wake) => this.#sleepers.push({ at: this.#t + ms, wake }));
  }

  /** Moves time forward by ms, waking each sleeper at its instant and letting what it started run. */
  async advance(ms: number): Promise<void> {
    const end = this.#t + ms;
    await settle();
    for (;;) {
      this.#sleepers.sort((a, b) => a.at - b.at);
      const next = this.#sleepers[0];
      if (!next || next.at > end) break;
      this.#sleepers.shift();
      this.#t = Math.max(this.#t, next.at);
      next.wake();
      await settle();
    }
    this.#t = end;
    await settle();
  }
}

/** Lets promise chains run to their next wait. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

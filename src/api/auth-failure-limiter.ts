import { MamoriError } from '../core/mamori-error.js';

export interface AuthFailureLimiterOptions {
  /** Wrong tokens an address may send within the window before it is refused (default 10). */
  maxFailures?: number;
  /** The window, in ms (default 60 s). */
  windowMs?: number;
  /** Addresses remembered at most; past it the stalest is forgotten (default 10,000). */
  maxAddresses?: number;
  now?: () => number;
}

/**
 * Slows down guessing API tokens: an address that sent `maxFailures` wrong tokens within
 * `windowMs` is refused (TOO_MANY_AUTH_FAILURES, 429) until the oldest of those failures
 * leaves the window, whatever token it sends then, so a guess that happens to be right
 * looks the same as a wrong one. In memory only (a restart forgets), with a bounded number
 * of addresses, so a flood of addresses cannot grow it without end.
 */
export class AuthFailureLimiter {
  #max: number;
  #windowMs: number;
  #maxAddresses: number;
  #now: () => number;
  /** Per address: the times of its recent failures, oldest first (at most #max). */
  #failures = new Map<string, number[]>();

  constructor(opts: AuthFailureLimiterOptions = {}) {
    this.#max = opts.maxFailures ?? 10;
    this.#windowMs = opts.windowMs ?? 60_000;
    this.#maxAddresses = opts.maxAddresses ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Throws TOO_MANY_AUTH_FAILURES when `address` must wait; called before its token is looked at. */
  check(address: string): void {
    const recent = this.#recent(address);
    if (recent.length < this.#max) return;
    const retryAfterSeconds = Math.max(1, Math.ceil((recent[0]! + this.#windowMs - this.#now()) / 1000));
    throw new MamoriError(
      'TOO_MANY_AUTH_FAILURES',
      `too many wrong API tokens from ${address} (${this.#max} within ${this.#windowMs / 1000} s); try again in ${retryAfterSeconds} s with the right token (the admin token is in DATA/admin-token)`,
      { details: { address, retryAfterSeconds } },
    );
  }

  /** Counts a refused token from `address`. */
  failed(address: string): void {
    const recent = this.#recent(address);
    recent.push(this.#now());
    if (recent.length > this.#max) recent.shift();
    // Re-inserted so the map's order is least recently failed first: the one to forget when full.
    this.#failures.delete(address);
    this.#failures.set(address, recent);
    if (this.#failures.size > this.#maxAddresses) this.#evict();
  }

  /** Addresses remembered now (for tests of the bound). */
  get size(): number {
    return this.#failures.size;
  }

  #recent(address: string): number[] {
    const times = this.#failures.get(address);
    if (!times) return [];
    const from = this.#now() - this.#windowMs;
    while (times.length > 0 && times[0]! <= from) times.shift();
    if (times.length === 0) this.#failures.delete(address);
    return times;
  }

  #evict(): void {
    // Least recently failed first: the expired ones are at the front, so stop at the first live one.
    const from = this.#now() - this.#windowMs;
    for (const [address, times] of this.#failures) {
      if (times.at(-1)! > from) break;
      this.#failures.delete(address);
    }
    while (this.#failures.size > this.#maxAddresses) {
      const stalest = this.#failures.keys().next().value as string;
      this.#failures.delete(stalest);
    }
  }
}

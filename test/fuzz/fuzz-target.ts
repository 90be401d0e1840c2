import type fc from 'fast-check';

/**
 * One parser of outside input under fuzz. `seeds` builds real inputs once per run (with
 * Debian's tools where a format needs them); `inputs` mutates them; `run` parses one input
 * the way mamori does. The rule every target is held to: `run` resolves, or throws a
 * MamoriError (src/core/mamori-error.ts); it never throws anything else, never takes more
 * than the per-input deadline, and never asks for a buffer sized by an untrusted field.
 */
export interface FuzzTarget<S = unknown, I = unknown> {
  readonly name: string;
  seeds(): Promise<S[]>;
  inputs(seeds: S[]): fc.Arbitrary<I>;
  run(input: I, deadline: Deadline): Promise<void> | void;
  /** A short description of an input for a finding (which seed, which mutations). */
  describe?(input: I): unknown;
}

/** The per-input time budget; readers under fuzz call check() on every read. */
export class Deadline {
  readonly #at: number;
  constructor(ms: number) {
    this.#at = performance.now() + ms;
  }
  get passed(): boolean {
    return performance.now() > this.#at;
  }
  check(): void {
    if (this.passed) throw new HangAbort();
  }
}

/** Thrown by a fuzz reader once an input's deadline has passed: it ends the run of a looping parser. */
export class HangAbort extends Error {
  constructor() {
    super('the per-input deadline passed');
    this.name = 'HangAbort';
  }
}

/** Thrown by a fuzz reader when a parser asks for more bytes at once than any real metadata needs. */
export class OversizedRead extends Error {
  constructor(
    readonly length: number,
    readonly limit: number,
  ) {
    super(`a read of ${length} bytes (limit ${limit}): a length taken from the input, unbounded`);
    this.name = 'OversizedRead';
  }
}

// Erased so the target list can hold targets of different input types.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFuzzTarget = FuzzTarget<any, any>;

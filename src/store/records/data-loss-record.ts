/* The data-loss bounds a plan run records per VM (plans/data-loss-bounds.ts computes them). */

/** What each bound was measured from. */
export type AtLeastSource = 'last-heartbeat' | 'shut-down-before-point' | 'none' | 'legacy';
export type AtMostSource = 'peer-watch' | 'run-start' | 'shut-down-before-point' | 'none';

export interface DataLoss {
  atLeastSec: number;
  /** null: nothing bounds it (the protected site answered after the run began, or it is an old run). */
  atMostSec: number | null;
  /** The moment each bound reaches to (null for none and legacy). */
  atLeastFrom: { source: AtLeastSource; at: string | null };
  atMostFrom: { source: AtMostSource; at: string | null };
}

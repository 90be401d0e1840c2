import type { RunMode } from './run-journal.js';

/** What a run of a plan would do (POST /plans/NAME/runs with dryRun), without doing it. */
export interface DryRun {
  plan: string;
  mode: RunMode;
  steps: { label: string; kind: string; vm?: string; priority?: number }[];
  /** Mean over earlier finished runs of this plan and mode of their slowest VM's RTO; null without history. */
  predictedRtoSec: number | null;
  inventoryFresh: boolean;
}

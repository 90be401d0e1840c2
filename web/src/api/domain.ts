/**
 * Routes that pass whole documents through (plans, runs, reports) are `additionalProperties`
 * objects in the OpenAPI document; their shapes come from the server's own types instead,
 * so they cannot drift either. Type imports only: nothing of the server is bundled.
 */
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { RunSummary } from '../../../src/plans/plan-report.js';

export type { PlanRun, RunStep, RunMode } from '../../../src/plans/run-journal.js';
export type { RunSummary } from '../../../src/plans/plan-report.js';
export type { DataLoss } from '../../../src/plans/data-loss-bounds.js';
export type { PlanView } from '../../../src/plans/plan-view.js';
export type { DryRun } from '../../../src/plans/dry-run.js';
export type { WriteLogReport } from '../../../src/guest/writelog-verifier.js';

/** GET /plan-runs/{id}, and the `run` of each event of its job (/jobs/{id}/events). */
export type RunWithSummary = PlanRun & { summary: RunSummary };

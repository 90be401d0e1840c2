import type { StoreHandle } from '../store/store-handle.js';
import { PlanRunRepo } from '../store/repos/plan-run-repo.js';
import type { PlanRun } from '../store/records/plan-run-record.js';
import { MamoriError } from '../core/mamori-error.js';
import type { JobJournal, JobState } from '../jobs/job-journal.js';
import { defineJobKind, NO_CONTEXT } from '../jobs/job-kind.js';

// The run's record types live in store/ (issue 20); re-exported for plans/ and the API.
export { RUN_MODES } from '../store/records/plan-run-record.js';
export type {
  RunMode,
  RunState,
  RunResult,
  RunStepKind,
  RunStepState,
  RunStep,
  RunVmOutcome,
  RunArrayState,
  PlanRun,
} from '../store/records/plan-run-record.js';

/**
 * A plan run is a job of the one journal, with the run's id: its steps (the run's own, which
 * depend on the plan) and state are reflected into the job at every save, so `mamori job list`
 * and the job event stream follow it like any other job. Resume: a run cut by a stop is marked
 * interrupted and waits for `mamori plan resume`, as SRM leaves a cut recovery to the operator
 * (re-running it continues from the first step not done).
 */
export const PLAN_RUN_JOB = defineJobKind<null>({
  kind: 'plan-run',
  policy: 'resume',
  steps: null,
  summary: "A recovery plan's run (test, cleanup, planned, disaster, reprotect, failback), step by step",
  context: NO_CONTEXT,
});

/**
 * The durable journal of plan runs: each step is written before it starts and after it
 * ends. One writer per run (the runner holds the run in memory), and writes are chained
 * so parallel VM steps never overwrite each other's journal entries.
 */
export class RunJournal {
  #repo: PlanRunRepo;
  #jobs: JobJournal;
  #writes = new Map<string, Promise<void>>();

  constructor(db: StoreHandle, jobs: JobJournal) {
    this.#repo = new PlanRunRepo(db);
    this.#jobs = jobs;
    jobs.define(PLAN_RUN_JOB, async (job) => {
      await this.#repo.markInterrupted();
      return `the site server stopped during this run; it waits: resume it with 'mamori plan resume ${job.id}'`;
    });
  }

  async insert(run: PlanRun): Promise<void> {
    await this.#repo.insert(run);
    await this.#jobOf(run);
  }

  /** Inserts a new run unless `assertFree` throws, seeing the runs not ended as they are at commit. */
  async insertUnlessBusy(run: PlanRun, assertFree: (active: PlanRun[]) => void): Promise<void> {
    await this.#repo.insertUnlessBusy(run, assertFree);
    await this.#jobOf(run);
  }

  /** The run's job, made once the run is recorded: a run refused (PLAN_BUSY) leaves no job. */
  async #jobOf(run: PlanRun): Promise<void> {
    await this.#jobs.create(PLAN_RUN_JOB, run.plan, { id: run.id, steps: run.steps.map((s) => s.label) });
    await this.#reflect(run);
  }

  /** Moves an interrupted run to `to` if it still is interrupted; false if another caller did first. */
  async leaveInterrupted(id: string, to: 'running' | 'cancelled'): Promise<boolean> {
    return this.#repo.leaveInterrupted(id, to, new Date().toISOString());
  }

  /** Persists the run as it is now, after any write already queued for it. */
  save(run: PlanRun): Promise<void> {
    run.updatedAt = new Date().toISOString();
    // A copy taken now: later changes to the live object belong to the next save.
    const snapshot: PlanRun = structuredClone(run);
    const prev = this.#writes.get(run.id) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(async () => {
        await this.#reflect(await this.#repo.update(snapshot));
      });
    this.#writes.set(run.id, next);
    return next;
  }

  /** The run as its job: state and steps (runs from before runs were jobs have none: nothing is written). */
  async #reflect(run: PlanRun): Promise<void> {
    await this.#jobs.reflect(run.id, {
      state: jobStateOf(run),
      steps: run.steps.map((s) => ({
        name: s.label,
        state: s.state,
        ...(s.startedAt ? { startedAt: s.startedAt } : {}),
        ...(s.endedAt ? { endedAt: s.endedAt } : {}),
      })),
      error:
        run.result === 'errors' || run.result === 'cancelled'
          ? { code: 'RUN_FAILED', message: run.error ?? `the run ended with ${run.result}` }
          : null,
      result: run.result ? { result: run.result, mode: run.mode } : null,
    });
  }

  async get(id: string): Promise<PlanRun> {
    const r = await this.#repo.find(id);
    if (!r)
      throw new MamoriError('RUN_NOT_FOUND', `no plan run ${id} on this site; see 'mamori plan history'`, {
        details: { run: id },
      });
    return r;
  }

  async list(filter: { plan?: string; limit?: number } = {}): Promise<PlanRun[]> {
    return this.#repo.list(filter);
  }

  async active(): Promise<PlanRun[]> {
    return this.#repo.active();
  }

  /** At server start: a run in flight died with the server; it waits for `plan resume`. */
  async markInterrupted(): Promise<string[]> {
    return this.#repo.markInterrupted();
  }
}

function jobStateOf(run: PlanRun): JobState {
  if (run.state === 'running' || run.state === 'waiting') return 'running';
  if (run.state === 'interrupted') return 'interrupted';
  return run.result === 'success' || run.result === 'warnings' ? 'succeeded' : 'failed';
}

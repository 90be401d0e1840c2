import { EventEmitter } from 'node:events';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { PlanRunRepo } from '../store/repos/plan-run-repo.js';
import type { PlanRun } from '../store/records/plan-run-record.js';
import { MamoriError } from '../core/mamori-error.js';

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
 * The durable journal of plan runs: each step is written before it starts and after it
 * ends. One writer per run (the runner holds the run in memory), and writes are chained
 * so parallel VM steps never overwrite each other's journal entries.
 */
export class RunJournal {
  #repo: PlanRunRepo;
  #writes = new Map<string, Promise<void>>();
  /** One event per run id, emitted after each save reached the database (the console's live view). */
  // Any number of open consoles may follow one run: no leak warning at the default of 10.
  #saved = new EventEmitter().setMaxListeners(0);

  constructor(db: Kysely<Database>) {
    this.#repo = new PlanRunRepo(db);
  }

  async insert(run: PlanRun): Promise<void> {
    await this.#repo.insert(run);
  }

  /** Inserts a new run unless `assertFree` throws, seeing the runs not ended as they are at commit. */
  async insertUnlessBusy(run: PlanRun, assertFree: (active: PlanRun[]) => void): Promise<void> {
    await this.#repo.insertUnlessBusy(run, assertFree);
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
        // The row as written, not the live object: a listener sees what a reader of the journal would.
        this.#saved.emit(run.id, await this.#repo.update(snapshot));
      });
    this.#writes.set(run.id, next);
    return next;
  }

  /**
   * Calls `listener` with the run each time a save of it is written, until the returned
   * function is called. Listeners must not throw: they run inside the journal's write chain.
   */
  subscribe(runId: string, listener: (run: PlanRun) => void): () => void {
    this.#saved.on(runId, listener);
    return () => void this.#saved.off(runId, listener);
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

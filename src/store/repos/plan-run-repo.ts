import type { Kysely, Selectable, Transaction } from 'kysely';
import type { Database, PlanRunTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import {
  RUN_MODES,
  type PlanRun,
  type RunArrayState,
  type RunResult,
  type RunState,
  type RunStep,
  type RunVmOutcome,
} from '../records/plan-run-record.js';
import { jsonColumn } from '../json-column.js';
import { enumColumn } from '../enum-column.js';
import { writeLock } from '../write-lock.js';
import { MamoriError } from '../../core/mamori-error.js';

/** plan_runs.options: the run's options, and the prompt it waits at (kept here so a restart shows it). */
export const runOptionsColumn = jsonColumn<PlanRun['options'] & { prompt?: string }>('plan_runs.options', {
  type: 'object',
  properties: { pointTime: { type: 'string' }, prompt: { type: 'string' } },
});
/** plan_runs.snapshot: the plan and the protected inventory as they were when the run started (opaque here). */
export const runSnapshotColumn = jsonColumn<unknown>('plan_runs.snapshot', {});
/** plan_runs.steps: the journal of steps. */
export const runStepsColumn = jsonColumn<RunStep[]>('plan_runs.steps', {
  type: 'array',
  items: {
    type: 'object',
    required: ['id', 'kind', 'label', 'state'],
    properties: {
      id: { type: 'string' },
      kind: { type: 'string' },
      label: { type: 'string' },
      state: { enum: ['pending', 'running', 'done', 'failed', 'skipped'] },
    },
  },
});
/** plan_runs.vms: per-VM outcome, by protected VM name. */
export const runVmsColumn = jsonColumn<Record<string, RunVmOutcome>>('plan_runs.vms', {
  type: 'object',
  additionalProperties: {
    type: 'object',
    required: ['vm', 'priority'],
    properties: { vm: { type: 'string' }, priority: { type: 'number' } },
  },
});
/** plan_runs.arrays: per array-based group, what the run made of its devices. */
export const runArraysColumn = jsonColumn<Record<string, RunArrayState>>('plan_runs.arrays', {
  type: 'object',
  additionalProperties: {
    type: 'object',
    required: ['point', 'paths'],
    properties: {
      point: { type: 'string' },
      pointAt: { type: ['string', 'null'] },
      paths: { type: 'object', additionalProperties: { type: 'string' } },
    },
  },
});

const runMode = enumColumn('plan_runs.mode', RUN_MODES);
const runState = enumColumn<RunState>('plan_runs.state', ['running', 'waiting', 'interrupted', 'done', 'cancelled']);
const runResult = enumColumn<RunResult>('plan_runs.result', ['success', 'warnings', 'errors', 'cancelled']);
const ACTIVE: RunState[] = ['running', 'waiting', 'interrupted'];

/** The plan_runs table: one row per run, rewritten whole at each save of its journal. */
export class PlanRunRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async insert(run: PlanRun): Promise<void> {
    await this.#db.insertInto('plan_runs').values(toRow(run)).execute();
  }

  /**
   * Inserts a new run unless another run is in the way: `assertFree` sees the runs not ended
   * as they are at commit and throws to refuse (PLAN_BUSY). The read and the insert hold the
   * plan-runs lock, so two starts at once (two requests, or two servers on one database)
   * cannot both pass; a plan deleted meanwhile is PLAN_NOT_FOUND (its delete takes the lock too).
   */
  async insertUnlessBusy(run: PlanRun, assertFree: (active: PlanRun[]) => void): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await lockPlanRuns(tx);
      if (!(await tx.selectFrom('plans').select('name').where('name', '=', run.plan).executeTakeFirst()))
        throw new MamoriError(
          'PLAN_NOT_FOUND',
          `recovery plan ${run.plan} was deleted meanwhile; see 'mamori plan list'`,
          {
            details: { plan: run.plan },
          },
        );
      assertFree((await tx.selectFrom('plan_runs').selectAll().where('state', 'in', ACTIVE).execute()).map(fromRow));
      await tx.insertInto('plan_runs').values(toRow(run)).execute();
    });
  }

  /**
   * Deletes the plan unless a run of it has not ended; returns that run's id (nothing deleted)
   * or undefined (deleted). Under the plan-runs lock, so no run of it starts in between.
   */
  async deletePlanUnlessActive(plan: string): Promise<string | undefined> {
    return this.#db.transaction().execute(async (tx) => {
      await lockPlanRuns(tx);
      const active = await tx
        .selectFrom('plan_runs')
        .select('id')
        .where('plan', '=', plan)
        .where('state', 'in', ACTIVE)
        .executeTakeFirst();
      if (active) return active.id;
      await tx.deleteFrom('plans').where('name', '=', plan).execute();
      return undefined;
    });
  }

  /**
   * Compare-and-set of an interrupted run's state (resume: running, cancel: cancelled): true
   * for the one caller whose update found it still interrupted. Two resumes at once, or a
   * resume and a cancel, must not both act on one run.
   */
  async leaveInterrupted(id: string, to: 'running' | 'cancelled', at: string): Promise<boolean> {
    const r = await this.#db
      .updateTable('plan_runs')
      .set({ state: to, updated_at: at })
      .where('id', '=', id)
      .where('state', '=', 'interrupted')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Writes the run whole; returns it as written (what a reader of the journal would see). */
  async update(run: PlanRun): Promise<PlanRun> {
    const row = toRow(run);
    await this.#db.updateTable('plan_runs').set(row).where('id', '=', run.id).execute();
    return fromRow(row);
  }

  async find(id: string): Promise<PlanRun | undefined> {
    const r = await this.#db.selectFrom('plan_runs').selectAll().where('id', '=', id).executeTakeFirst();
    return r && fromRow(r);
  }

  /** Newest first. */
  async list(filter: { plan?: string; limit?: number } = {}): Promise<PlanRun[]> {
    let q = this.#db.selectFrom('plan_runs').selectAll();
    if (filter.plan !== undefined) q = q.where('plan', '=', filter.plan);
    return (
      await q
        .orderBy('started_at', 'desc')
        .orderBy('id', 'desc')
        .limit(filter.limit ?? 50)
        .execute()
    ).map(fromRow);
  }

  /** Runs not ended: running, waiting at a prompt, or interrupted. */
  async active(): Promise<PlanRun[]> {
    return (await this.#db.selectFrom('plan_runs').selectAll().where('state', 'in', ACTIVE).execute()).map(fromRow);
  }

  /** A run of the plan that has not ended, if any. */
  async activeRunOf(plan: string): Promise<string | undefined> {
    return (
      await this.#db
        .selectFrom('plan_runs')
        .select('id')
        .where('plan', '=', plan)
        .where('state', 'in', ACTIVE)
        .executeTakeFirst()
    )?.id;
  }

  /** Running and waiting runs become interrupted; returns their ids. */
  async markInterrupted(): Promise<string[]> {
    const rows = await this.#db
      .selectFrom('plan_runs')
      .select('id')
      .where('state', 'in', ['running', 'waiting'])
      .execute();
    if (rows.length > 0)
      await this.#db
        .updateTable('plan_runs')
        .set({ state: 'interrupted', updated_at: new Date().toISOString() })
        .where('state', 'in', ['running', 'waiting'])
        .execute();
    return rows.map((r) => r.id);
  }
}

function toRow(run: PlanRun): Selectable<PlanRunTable> {
  return {
    id: run.id,
    plan: run.plan,
    mode: run.mode,
    state: run.state,
    peer: run.peer,
    options: runOptionsColumn.encode({ ...run.options, ...(run.prompt !== undefined ? { prompt: run.prompt } : {}) }),
    snapshot: runSnapshotColumn.encode(run.snapshot),
    steps: runStepsColumn.encode(run.steps),
    vms: runVmsColumn.encode(run.vms),
    arrays: runArraysColumn.encode(run.arrays),
    result: run.result,
    error: run.error,
    started_at: run.startedAt,
    ended_at: run.endedAt,
    updated_at: run.updatedAt,
  };
}

function fromRow(r: Selectable<PlanRunTable>): PlanRun {
  const { prompt, ...rest } = runOptionsColumn.decode(r.options);
  const state = runState(r.state);
  return {
    id: r.id,
    plan: r.plan,
    mode: runMode(r.mode),
    state,
    peer: r.peer,
    options: rest,
    snapshot: runSnapshotColumn.decode(r.snapshot),
    steps: runStepsColumn.decode(r.steps),
    vms: runVmsColumn.decode(r.vms),
    arrays: runArraysColumn.decode(r.arrays),
    result: r.result === null ? null : runResult(r.result),
    error: r.error,
    ...(prompt !== undefined && state === 'waiting' ? { prompt } : {}),
    startedAt: r.started_at,
    endedAt: r.ended_at,
    updatedAt: r.updated_at,
  };
}

/**
 * Orders the transactions that read the runs not ended and then write a run or delete a plan:
 * PostgreSQL's named lock, and on SQLite a first write (a no-op update) that takes its write
 * lock before the reads.
 */
async function lockPlanRuns(tx: Transaction<Database>): Promise<void> {
  await writeLock(tx, 'plan_runs');
  await tx
    .updateTable('plan_runs')
    .set((eb) => ({ state: eb.ref('state') }))
    .where('id', '=', '')
    .execute();
}

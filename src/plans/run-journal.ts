import { EventEmitter } from 'node:events';
import type { Kysely, Selectable } from 'kysely';
import type { Database, PlanRunTable } from '../store/schema.js';
import { MamoriError } from '../core/mamori-error.js';
import type { DataLoss } from './data-loss-bounds.js';

export const RUN_MODES = ['test', 'cleanup', 'planned', 'disaster', 'reprotect', 'failback'] as const;
export type RunMode = (typeof RUN_MODES)[number];

/** running: steps in flight; waiting: at a prompt; interrupted: the server died during it (resume it). */
export type RunState = 'running' | 'waiting' | 'interrupted' | 'done' | 'cancelled';
export type RunResult = 'success' | 'warnings' | 'errors' | 'cancelled';

export type RunStepKind = 'cleanup-vm'
  // array-based groups: whole devices, through the storage adapters at both sites
  | 'array-test-start' | 'array-test-stop' | 'array-prepare-failover' | 'array-failover' | 'array-prepare-reverse' | 'array-reverse'
  | 'shutdown' | 'promote' | 'recover' | 'power-on' | 'command' | 'prompt'
  // reprotect: the old protected site seeds a replica from its superseded VM; this site replicates back.
  | 'seed-peer' | 'replicate'
  // failback: shut down here and sync, the peer promotes and recovers, then reprotect the other way.
  | 'shutdown-local' | 'promote-peer' | 'recover-peer' | 'seed-local' | 'replicate-peer';
export type RunStepState = 'pending' | 'running' | 'done' | 'failed' | 'skipped';

export interface RunStep {
  id: string;
  kind: RunStepKind;
  label: string;
  /** The protected VM the step is about (by name), if any. */
  vm?: string;
  priority?: number;
  state: RunStepState;
  startedAt?: string;
  endedAt?: string;
  message?: string;
  /** Index into the plan's steps, for command and prompt steps. */
  planStep?: number;
  /** The recovered VM's id, for cleanup steps. */
  vmId?: string;
  /** The array-based protection group, for array steps. */
  group?: string;
}

export interface RunVmOutcome {
  vm: string;
  priority: number;
  recoveredVmId?: string;
  point?: { id: string; time: string };
  /** Seconds from the run's start to the recovered VM's first heartbeat. */
  rtoSec?: number;
  heartbeatAt?: string;
  /** The window of writes the point may not hold, as bounds (data-loss-bounds.ts); absent: unknown. */
  dataLoss?: DataLoss;
  /**
   * Runs journalled before the bounds: one figure, measured as a lower bound. Read only
   * (storedDataLoss shows it as "at least"); never written now.
   */
  dataLossSec?: number | null;
  /** Where the bounds came from, in words. */
  dataLossNote?: string;
  ip?: string;
  protectedStoppedAt?: string;
  forcedOff?: boolean;
  /** Reprotect: what the first reverse cycle sent (only the differences) against the disk size. */
  reprotect?: { mode: string; bytesSent: number; diskBytes: number; bytesChanged?: number };
  error?: string;
}

/** What a run made of an array-based group's devices at this site. */
export interface RunArrayState {
  /** The point (array snapshot) the devices' data is from, and when it was taken. */
  point: string;
  pointAt: string | null;
  /** Device id (the target device) to where its data is mounted here: a test copy or the failed-over device. */
  paths: Record<string, string>;
  /** Reprotect: what the first sync the other way sent, per device. */
  bytesSent?: Record<string, number>;
}

export interface PlanRun {
  id: string;
  plan: string;
  mode: RunMode;
  state: RunState;
  peer: string;
  options: { pointTime?: string };
  snapshot: unknown;
  steps: RunStep[];
  vms: Record<string, RunVmOutcome>;
  /** Array-based groups, by name. */
  arrays: Record<string, RunArrayState>;
  result: RunResult | null;
  error: string | null;
  /** Set while waiting at a prompt. */
  prompt?: string;
  startedAt: string;
  endedAt: string | null;
  updatedAt: string;
}

/**
 * The durable journal of plan runs: each step is written before it starts and after it
 * ends. One writer per run (the runner holds the run in memory), and writes are chained
 * so parallel VM steps never overwrite each other's journal entries.
 */
export class RunJournal {
  #db: Kysely<Database>;
  #writes = new Map<string, Promise<void>>();
  /** One event per run id, emitted after each save reached the database (the console's live view). */
  // Any number of open consoles may follow one run: no leak warning at the default of 10.
  #saved = new EventEmitter().setMaxListeners(0);

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async insert(run: PlanRun): Promise<void> {
    await this.#db.insertInto('plan_runs').values(toRow(run)).execute();
  }

  /** Persists the run as it is now, after any write already queued for it. */
  save(run: PlanRun): Promise<void> {
    run.updatedAt = new Date().toISOString();
    const row = toRow(run);
    const prev = this.#writes.get(run.id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(async () => {
      await this.#db.updateTable('plan_runs').set(row).where('id', '=', run.id).execute();
      // The row as written, not the live object: a listener sees what a reader of the journal would.
      this.#saved.emit(run.id, fromRow(row));
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
    const r = await this.#db.selectFrom('plan_runs').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw new MamoriError('RUN_NOT_FOUND', `no plan run ${id} on this site; see 'mamori plan history'`, { details: { run: id } });
    return fromRow(r);
  }

  async list(filter: { plan?: string; limit?: number } = {}): Promise<PlanRun[]> {
    let q = this.#db.selectFrom('plan_runs').selectAll();
    if (filter.plan !== undefined) q = q.where('plan', '=', filter.plan);
    return (await q.orderBy('started_at', 'desc').orderBy('id', 'desc').limit(filter.limit ?? 50).execute()).map(fromRow);
  }

  async active(): Promise<PlanRun[]> {
    return (await this.#db.selectFrom('plan_runs').selectAll().where('state', 'in', ['running', 'waiting', 'interrupted']).execute()).map(fromRow);
  }

  /** At server start: a run in flight died with the server; it waits for `plan resume`. */
  async markInterrupted(): Promise<string[]> {
    const rows = await this.#db.selectFrom('plan_runs').select('id').where('state', 'in', ['running', 'waiting']).execute();
    if (rows.length > 0) await this.#db.updateTable('plan_runs').set({ state: 'interrupted', updated_at: new Date().toISOString() }).where('state', 'in', ['running', 'waiting']).execute();
    return rows.map((r) => r.id);
  }
}

function toRow(run: PlanRun): Selectable<PlanRunTable> {
  return {
    id: run.id, plan: run.plan, mode: run.mode, state: run.state, peer: run.peer,
    options: JSON.stringify({ ...run.options, ...(run.prompt !== undefined ? { prompt: run.prompt } : {}) }),
    snapshot: JSON.stringify(run.snapshot), steps: JSON.stringify(run.steps), vms: JSON.stringify(run.vms), arrays: JSON.stringify(run.arrays),
    result: run.result, error: run.error, started_at: run.startedAt, ended_at: run.endedAt, updated_at: run.updatedAt,
  };
}

function fromRow(r: Selectable<PlanRunTable>): PlanRun {
  const options = JSON.parse(r.options) as PlanRun['options'] & { prompt?: string };
  const { prompt, ...rest } = options;
  return {
    id: r.id, plan: r.plan, mode: r.mode as RunMode, state: r.state as RunState, peer: r.peer, options: rest,
    snapshot: JSON.parse(r.snapshot) as unknown, steps: JSON.parse(r.steps) as RunStep[], vms: JSON.parse(r.vms) as Record<string, RunVmOutcome>,
    arrays: JSON.parse(r.arrays) as Record<string, RunArrayState>, result: r.result as RunResult | null, error: r.error, ...(prompt !== undefined && r.state === 'waiting' ? { prompt } : {}),
    startedAt: r.started_at, endedAt: r.ended_at, updatedAt: r.updated_at,
  };
}

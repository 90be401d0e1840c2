import { EventEmitter } from 'node:events';
import type { StoreHandle } from '../store/store-handle.js';
import { JobRepo } from '../store/repos/job-repo.js';
import { newShortId } from '../core/ids.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { faultPoint } from '../core/fault-points.js';
import type { JobKind, RecoveryPolicy } from './job-kind.js';

/** `interrupted`: cut by a server stop, its kind's policy is resume: the work is (or waits to be) taken up. */
export const JOB_STATES = ['running', 'succeeded', 'failed', 'interrupted'] as const;
export type JobState = (typeof JOB_STATES)[number];
export type StepState = 'pending' | 'running' | 'done' | 'failed' | 'skipped';

export interface JobStep {
  name: string;
  state: StepState;
  startedAt?: string;
  endedAt?: string;
}

export interface Job {
  id: string;
  kind: string;
  state: JobState;
  target: string | null;
  steps: JobStep[];
  progress: number;
  result: unknown;
  error: { code: string; message: string } | null;
  /** What the kind's recovery needs, as written; read it typed with JobJournal.context(). */
  context: unknown;
  /** The kind's context version the context was written with (null: none written). */
  contextVersion: number | null;
  createdAt: string;
  updatedAt: string;
}

/**
 * A recovery that finished the work rather than undid it or left it (a migration cut after
 * switchover completed, a pool delete whose rows were all gone): the job ends `succeeded`, since
 * reporting done work as failed would send an operator to redo or clean what is right.
 */
export interface JobFinished {
  /** What the recovery found and did, kept in the job's result as `recovered`. */
  finished: string;
  /** The kind's own result, where the recovery can give it. */
  result?: unknown;
}

/**
 * A recovery that took the job up itself: the job stays `running`, and the kind ends it (succeed
 * or fail) when the work it set going ends. For work that needs this site serving, which it does
 * only after recovery (a migration's reversed replication: the peer's first cycle calls back
 * here). A stop before then leaves the job running, so the next start recovers it again: the
 * rule must be safe to run twice.
 */
export interface JobTakenUp {
  /** What the recovery set going, for the log. */
  takenUp: string;
}

/** The result a job finished by its recovery keeps: what was done, and the kind's result if any. */
export interface RecoveredResult {
  recovered: string;
  result: unknown;
}

/**
 * What a kind does with a job cut by a stop, given the job as journalled and its context read
 * through the kind's schema (null if the job never wrote one). `rollback` rules undo and may
 * return the message the failed job keeps; `resume` rules take the work up (or leave it for
 * the operator's resume, as plan runs do) and return what the interrupted job says. Either may
 * return JobFinished instead when the work was (or was made) complete: the job succeeds.
 */
export type JobRecovery<C> = (job: Job, context: C | null) => Promise<JobRecoveryOutcome>;
export type JobRecoveryOutcome = void | string | JobFinished | JobTakenUp;

/** Whether a recovery's answer says the work is done. */
export function isJobFinished(outcome: JobRecoveryOutcome): outcome is JobFinished {
  return typeof outcome === 'object' && outcome !== null && 'finished' in outcome;
}

function isJobTakenUp(outcome: JobRecoveryOutcome): outcome is JobTakenUp {
  return typeof outcome === 'object' && outcome !== null && 'takenUp' in outcome;
}

/** A kind as `mamori job kinds` lists it. */
export interface JobKindView {
  kind: string;
  policy: RecoveryPolicy;
  steps: string[] | null;
  contextVersion: number;
  summary: string;
}

interface Registered {
  kind: JobKind<unknown>;
  recover: JobRecovery<unknown>;
}

/**
 * The one journal of long operations (issue 20): replication cycles, array syncs, migrations,
 * conversions, imports, exports, plan runs, pool operations and storage benchmarks. Each step is
 * written before and after it runs, so a restarted server knows exactly where a job stopped,
 * and each kind declares (job-kind.ts) its steps, its recovery policy and a versioned context.
 * Model: libvirt's persisted migration phases with one recovery case per phase.
 * Every write is published to the job's subscribers (the API's event stream).
 */
export class JobJournal {
  #jobs: JobRepo;
  #kinds = new Map<string, Registered>();
  // Any number of open consoles may follow one job: no leak warning at the default of 10.
  #written = new EventEmitter().setMaxListeners(0);

  constructor(db: StoreHandle) {
    this.#jobs = new JobRepo(db);
  }

  /** Declares a kind with its recovery; a job of a kind not declared cannot be created. */
  define<C>(kind: JobKind<C>, recover: JobRecovery<C>): void {
    if (this.#kinds.has(kind.kind)) throw new Error(`job kind ${kind.kind} is declared twice`);
    this.#kinds.set(kind.kind, {
      kind: kind as JobKind<unknown>,
      recover: recover as JobRecovery<unknown>,
    });
  }

  kinds(): JobKindView[] {
    return [...this.#kinds.values()]
      .map(({ kind: k }) => ({
        kind: k.kind,
        policy: k.policy,
        steps: k.steps ? [...k.steps] : null,
        contextVersion: k.context.version,
        summary: k.summary,
      }))
      .sort((a, b) => a.kind.localeCompare(b.kind));
  }

  /**
   * A new running job. `steps` defaults to the kind's; kinds whose jobs decide their own steps
   * pass them. `id` is for a job that mirrors a record with its own id (a plan run's).
   */
  async create<C>(
    kind: JobKind<C>,
    target: string | null,
    opts: { steps?: readonly string[]; id?: string } = {},
  ): Promise<Job> {
    if (this.#kinds.get(kind.kind)?.kind !== kind)
      throw new Error(`job kind ${kind.kind} was not declared to this journal (define it at construction)`);
    const names = opts.steps ?? kind.steps;
    if (!names) throw new Error(`job kind ${kind.kind} has no fixed steps: pass them`);
    const now = new Date().toISOString();
    const steps: JobStep[] = names.map((name) => ({ name, state: 'pending' }));
    const id = opts.id ?? newShortId('job');
    await this.#jobs.insert({ id, kind: kind.kind, target, steps, at: now });
    return this.#read(id);
  }

  async get(id: string): Promise<Job> {
    const job = await this.#jobs.find(id);
    if (!job) throw new MamoriError('JOB_NOT_FOUND', `no job ${id} on this site; list jobs with 'mamori job list'`);
    return job;
  }

  async find(id: string): Promise<Job | undefined> {
    return this.#jobs.find(id);
  }

  async list(filter: { kind?: string; target?: string; state?: JobState; limit?: number } = {}): Promise<Job[]> {
    return this.#jobs.list({ ...filter, limit: filter.limit ?? 50 });
  }

  /** Runs one step, journalled before and after. A throw marks the step and the job failed. */
  async step<T>(jobId: string, name: string, fn: () => Promise<T>): Promise<T> {
    const kind = await this.#markStep(jobId, name, 'running');
    try {
      const out = await fn();
      // The cut every kill -9 test makes: the step's work is done, the journal does not say so yet.
      faultPoint(`job:${kind}:${name}`);
      await this.#markStep(jobId, name, 'done');
      return out;
    } catch (e) {
      await this.#markStep(jobId, name, 'failed');
      throw e;
    }
  }

  /** Records what the kind's recovery needs to undo (or take up) the steps that follow; checked against its schema. */
  async setContext<C>(kind: JobKind<C>, jobId: string, context: C): Promise<void> {
    kind.shape.check(context);
    await this.#jobs.setContext(jobId, context, kind.context.version, new Date().toISOString());
    await this.#publish(jobId);
  }

  /**
   * The job's context in today's shape: as written if its version is the kind's, through the
   * kind's upgrades if older; refused (JOB_CONTEXT_VERSION) if newer or without an upgrade.
   */
  context<C>(kind: JobKind<C>, job: Job): C | null {
    if (job.kind !== kind.kind) throw new Error(`job ${job.id} is a ${job.kind}, not a ${kind.kind}`);
    if (job.context === null || job.context === undefined) return null;
    // Contexts written before they had versions are version 1.
    let version = job.contextVersion ?? 1;
    let value: unknown = job.context;
    while (version < kind.context.version) {
      const up = kind.context.upgrade?.[version];
      if (!up) break;
      value = up(value);
      version++;
    }
    if (version !== kind.context.version)
      throw new MamoriError(
        'JOB_CONTEXT_VERSION',
        `job ${job.id} (${job.kind}) holds a context of version ${job.contextVersion ?? 1}, and this mamori reads version ${kind.context.version} with no way from one to the other; it was not recovered: run the mamori version that wrote it, or clean up by hand what the job names`,
        { details: { job: job.id, kind: job.kind, written: job.contextVersion ?? 1, reads: kind.context.version } },
      );
    return kind.shape.check(value);
  }

  /**
   * For kinds whose own record holds the steps (a plan run): the job made to say what the
   * record says, so `job list` and the event stream follow it like any other job.
   */
  async reflect(
    jobId: string,
    now: { state: JobState; steps: JobStep[]; error?: { code: string; message: string } | null; result?: unknown },
  ): Promise<void> {
    const done = now.steps.filter((s) => s.state === 'done' || s.state === 'skipped' || s.state === 'failed').length;
    await this.#jobs.reflect(jobId, {
      state: now.state,
      steps: now.steps,
      progress: now.steps.length ? done / now.steps.length : now.state === 'succeeded' ? 1 : 0,
      error: now.error ?? null,
      result: now.result ?? null,
      at: new Date().toISOString(),
    });
    await this.#publish(jobId);
  }

  /**
   * Keeps the newest `keep` finished jobs of a kind and target: frequent jobs (a replication
   * cycle every few seconds) would otherwise grow the table without end.
   */
  async prune(kind: JobKind<unknown>, target: string, keep: number): Promise<void> {
    await this.#jobs.pruneFinished(kind.kind, target, keep);
  }

  async progress(jobId: string, fraction: number): Promise<void> {
    await this.#jobs.setProgress(jobId, Math.max(0, Math.min(1, fraction)), new Date().toISOString());
    await this.#publish(jobId);
  }

  async succeed(jobId: string, result: unknown): Promise<void> {
    await this.#jobs.succeed(jobId, result ?? null, new Date().toISOString());
    await this.#publish(jobId);
  }

  async fail(jobId: string, error: { code: string; message: string }): Promise<void> {
    await this.#jobs.fail(jobId, error, new Date().toISOString());
    await this.#publish(jobId);
  }

  /**
   * Calls `listener` with the job as read back after each write to it, until the returned
   * function is called. Listeners must not throw.
   */
  subscribe(jobId: string, listener: (job: Job) => void): () => void {
    this.#written.on(jobId, listener);
    return () => void this.#written.off(jobId, listener);
  }

  /**
   * At server start: every job still 'running' was cut by a stop. Its kind's recovery runs with
   * its context; a `rollback` job ends failed (its partial work undone), a `resume` job ends
   * interrupted (its work taken up, or waiting for the operator's resume), and a job of either
   * policy whose recovery answers JobFinished ends succeeded (the work is done); one whose recovery
   * answers JobTakenUp stays running, its kind ends it. A job whose context
   * cannot be read safely (JOB_CONTEXT_VERSION, a wrong shape) is not recovered: it ends failed
   * with that error, so an operator sees what to clean.
   */
  async recoverInterrupted(log: (msg: string, job: Job, err?: unknown) => void): Promise<number> {
    const rows = await this.#jobs.running();
    for (const job of rows) {
      const registered = this.#kinds.get(job.kind);
      if (!registered) {
        await this.fail(job.id, {
          code: 'JOB_KIND_UNKNOWN',
          message: `the site server stopped during this ${job.kind} job, and this mamori has no such job kind: clean up by hand what it names`,
        });
        log('interrupted job of an unknown kind left failed', job);
        continue;
      }
      let context: unknown;
      try {
        context = this.context(registered.kind, job);
      } catch (e) {
        const code = isMamoriError(e) ? e.code : 'INTERNAL';
        await this.fail(job.id, { code, message: (e as Error).message });
        log('interrupted job not recovered: its context cannot be read', job, e);
        continue;
      }
      try {
        const message = await registered.recover(job, context);
        if (isJobTakenUp(message)) {
          log(`interrupted job taken up by its kind, running on: ${message.takenUp}`, job);
          continue;
        }
        if (isJobFinished(message)) {
          const result: RecoveredResult = { recovered: message.finished, result: message.result ?? null };
          await this.#jobs.succeed(job.id, result, new Date().toISOString());
        } else if (registered.kind.policy === 'rollback')
          await this.fail(job.id, {
            code: 'INTERNAL',
            message:
              message ||
              'the site server stopped during this job; its partial work was undone (rolled back), run it again',
          });
        else
          await this.#jobs.interrupt(
            job.id,
            {
              code: 'JOB_INTERRUPTED',
              message: message || 'the site server stopped during this job; its work is taken up where it stopped',
            },
            new Date().toISOString(),
          );
        await this.#publish(job.id);
        log('recovered interrupted job', job);
      } catch (e) {
        log('recovery of interrupted job failed; it stays marked running for the next start', job, e);
      }
    }
    return rows.length;
  }

  /** Returns the job's kind (the step's fault point is named after it). */
  async #markStep(jobId: string, name: string, state: StepState): Promise<string> {
    const job = await this.get(jobId);
    const now = new Date().toISOString();
    const steps = job.steps.map((s) =>
      s.name === name ? { ...s, state, ...(state === 'running' ? { startedAt: now } : { endedAt: now }) } : s,
    );
    await this.#jobs.setSteps(jobId, steps, now);
    await this.#publish(jobId);
    return job.kind;
  }

  async #read(id: string): Promise<Job> {
    const job = await this.get(id);
    this.#written.emit(id, job);
    return job;
  }

  async #publish(id: string): Promise<void> {
    if (this.#written.listenerCount(id) === 0) return;
    const job = await this.#jobs.find(id);
    if (job) this.#written.emit(id, job);
  }
}

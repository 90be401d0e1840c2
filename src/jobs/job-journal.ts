import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { JobRepo } from '../store/repos/job-repo.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import { faultPoint } from '../core/fault-points.js';

export const JOB_STATES = ['running', 'succeeded', 'failed'] as const;
export type JobState = (typeof JOB_STATES)[number];
export type StepState = 'pending' | 'running' | 'done' | 'failed';

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
  /** What the kind's recovery rule needs (written by the job as it goes); null if none. */
  context: unknown;
  createdAt: string;
  updatedAt: string;
}

/**
 * A recovery rule per job kind: what is safe to do with a job the server was running
 * when it died. It gets the journal as written (the step in flight says where it was)
 * and must leave no half-made object behind.
 */
/** Repairs what an interrupted job left; may return the message the failed job is left with. */
export type JobRecoveryRule = (job: Job) => Promise<void | string>;

/**
 * The journal of long operations: each step is written before and after it runs, so a
 * restarted server knows exactly where a job stopped. Model: libvirt's persisted
 * migration phases with one recovery case per phase.
 */
export class JobJournal {
  #jobs: JobRepo;
  #rules = new Map<string, JobRecoveryRule>();

  constructor(db: Kysely<Database>) {
    this.#jobs = new JobRepo(db);
  }

  registerRecovery(kind: string, rule: JobRecoveryRule): void {
    this.#rules.set(kind, rule);
  }

  async create(kind: string, target: string | null, stepNames: string[]): Promise<Job> {
    const now = new Date().toISOString();
    const steps: JobStep[] = stepNames.map((name) => ({ name, state: 'pending' }));
    const id = newShortId('job');
    await this.#jobs.insert({ id, kind, target, steps, at: now });
    return this.get(id);
  }

  async get(id: string): Promise<Job> {
    const job = await this.#jobs.find(id);
    if (!job) throw new MamoriError('JOB_NOT_FOUND', `no job ${id} on this site; list jobs with 'mamori job list'`);
    return job;
  }

  async list(filter: { kind?: string; target?: string; limit?: number } = {}): Promise<Job[]> {
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

  /** Records what a recovery rule would need to undo the steps that follow. */
  async setContext(jobId: string, context: unknown): Promise<void> {
    await this.#jobs.setContext(jobId, context, new Date().toISOString());
  }

  /**
   * Keeps the newest `keep` finished jobs of a kind and target: frequent jobs (a replication
   * cycle every few seconds) would otherwise grow the table without end.
   */
  async prune(kind: string, target: string, keep: number): Promise<void> {
    await this.#jobs.pruneFinished(kind, target, keep);
  }

  async progress(jobId: string, fraction: number): Promise<void> {
    await this.#jobs.setProgress(jobId, Math.max(0, Math.min(1, fraction)), new Date().toISOString());
  }

  async succeed(jobId: string, result: unknown): Promise<void> {
    await this.#jobs.succeed(jobId, result ?? null, new Date().toISOString());
  }

  async fail(jobId: string, error: { code: string; message: string }): Promise<void> {
    await this.#jobs.fail(jobId, error, new Date().toISOString());
  }

  /** At server start: every job still 'running' was cut by a crash; apply its kind's rule. */
  async recoverInterrupted(log: (msg: string, job: Job, err?: unknown) => void): Promise<number> {
    const rows = await this.#jobs.running();
    for (const job of rows) {
      const rule = this.#rules.get(job.kind);
      try {
        const message = rule ? await rule(job) : undefined;
        await this.fail(job.id, {
          code: 'INTERNAL',
          message: message || 'the site server stopped during this job; its partial work was cleaned up, run it again',
        });
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
    return job.kind;
  }
}

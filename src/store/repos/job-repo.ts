import type { Kysely, Selectable } from 'kysely';
import type { Database, JobTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { jsonColumn } from '../json-column.js';

export type JobRecordState = 'running' | 'succeeded' | 'failed' | 'interrupted';
export type JobStepRecordState = 'pending' | 'running' | 'done' | 'failed' | 'skipped';

/** One step of a job's journal, as jobs.steps holds it. */
export interface JobStepRecord {
  name: string;
  state: JobStepRecordState;
  startedAt?: string;
  endedAt?: string;
}

/** A jobs row with its JSON columns decoded. */
export interface JobRecord {
  id: string;
  kind: string;
  state: JobRecordState;
  target: string | null;
  steps: JobStepRecord[];
  progress: number;
  result: unknown;
  error: { code: string; message: string } | null;
  context: unknown;
  /** The job kind's context version the context was written with; null when none was written. */
  contextVersion: number | null;
  createdAt: string;
  updatedAt: string;
}

const stepsColumn = jsonColumn<JobStepRecord[]>('jobs.steps', {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'state'],
    properties: {
      name: { type: 'string' },
      state: { enum: ['pending', 'running', 'done', 'failed', 'skipped'] },
      startedAt: { type: 'string' },
      endedAt: { type: 'string' },
    },
  },
});
/** What the job returned: any JSON value (each kind has its own shape; the API passes it on). */
const resultColumn = jsonColumn<unknown>('jobs.result', {});
const errorColumn = jsonColumn<{ code: string; message: string }>('jobs.error', {
  type: 'object',
  required: ['code', 'message'],
  properties: { code: { type: 'string' }, message: { type: 'string' } },
});
/** The kind's recovery context: any JSON here; the kind's versioned schema checks it (jobs/job-kind.ts). */
const contextColumn = jsonColumn<unknown>('jobs.context', {});

/** The jobs table: the journal of long operations (jobs/job-journal.ts decides what is written when). */
export class JobRepo {
  #db: Kysely<Database>;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
  }

  async insert(j: {
    id: string;
    kind: string;
    target: string | null;
    steps: JobStepRecord[];
    at: string;
  }): Promise<void> {
    await this.#db
      .insertInto('jobs')
      .values({
        id: j.id,
        kind: j.kind,
        state: 'running',
        target: j.target,
        steps: stepsColumn.encode(j.steps),
        progress: 0,
        result: null,
        error: null,
        created_at: j.at,
        updated_at: j.at,
      })
      .execute();
  }

  async find(id: string): Promise<JobRecord | undefined> {
    const row = await this.#db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toRecord(row);
  }

  /** Newest first. */
  async list(filter: { kind?: string; target?: string; state?: JobRecordState; limit: number }): Promise<JobRecord[]> {
    let q = this.#db.selectFrom('jobs').selectAll();
    if (filter.state !== undefined) q = q.where('state', '=', filter.state);
    if (filter.kind !== undefined) q = q.where('kind', '=', filter.kind);
    if (filter.target !== undefined) q = q.where('target', '=', filter.target);
    return (await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute()).map(toRecord);
  }

  /** Jobs still marked running: at server start, those a crash cut. */
  async running(): Promise<JobRecord[]> {
    return (await this.#db.selectFrom('jobs').selectAll().where('state', '=', 'running').execute()).map(toRecord);
  }

  async setSteps(id: string, steps: JobStepRecord[], at: string): Promise<void> {
    await this.#db
      .updateTable('jobs')
      .set({ steps: stepsColumn.encode(steps), updated_at: at })
      .where('id', '=', id)
      .execute();
  }

  async setContext(id: string, context: unknown, version: number, at: string): Promise<void> {
    await this.#db
      .updateTable('jobs')
      .set({ context: contextColumn.encode(context), context_version: version, updated_at: at })
      .where('id', '=', id)
      .execute();
  }

  async setProgress(id: string, fraction: number, at: string): Promise<void> {
    await this.#db.updateTable('jobs').set({ progress: fraction, updated_at: at }).where('id', '=', id).execute();
  }

  async succeed(id: string, result: unknown, at: string): Promise<void> {
    await this.#db
      .updateTable('jobs')
      .set({ state: 'succeeded', progress: 1, result: resultColumn.encode(result), updated_at: at })
      .where('id', '=', id)
      .execute();
  }

  async fail(id: string, error: { code: string; message: string }, at: string): Promise<void> {
    await this.#db
      .updateTable('jobs')
      .set({ state: 'failed', error: errorColumn.encode(error), updated_at: at })
      .where('id', '=', id)
      .execute();
  }

  /** A job cut by a stop whose kind resumes: not failed, its work is taken up. */
  async interrupt(id: string, error: { code: string; message: string }, at: string): Promise<void> {
    await this.#db
      .updateTable('jobs')
      .set({ state: 'interrupted', error: errorColumn.encode(error), updated_at: at })
      .where('id', '=', id)
      .execute();
  }

  /** The whole visible state at once, for a job that mirrors a record of its own (a plan run). */
  async reflect(
    id: string,
    j: {
      state: JobRecordState;
      steps: JobStepRecord[];
      progress: number;
      error: { code: string; message: string } | null;
      result: unknown;
      at: string;
    },
  ): Promise<void> {
    await this.#db
      .updateTable('jobs')
      .set({
        state: j.state,
        steps: stepsColumn.encode(j.steps),
        progress: j.progress,
        error: j.error === null ? null : errorColumn.encode(j.error),
        result: j.result === null ? null : resultColumn.encode(j.result),
        updated_at: j.at,
      })
      .where('id', '=', id)
      .execute();
  }

  /** Deletes the finished jobs of a kind and target beyond the newest `keep` (at most 1,000 a call). */
  async pruneFinished(kind: string, target: string, keep: number): Promise<void> {
    const old = await this.#db
      .selectFrom('jobs')
      .select('id')
      .where('kind', '=', kind)
      .where('target', '=', target)
      .where('state', 'not in', ['running', 'interrupted'])
      .orderBy('created_at', 'desc')
      .offset(keep)
      .limit(1000)
      .execute();
    if (old.length > 0)
      await this.#db
        .deleteFrom('jobs')
        .where(
          'id',
          'in',
          old.map((r) => r.id),
        )
        .execute();
  }

  /** Jobs per kind and state (the metrics' gauge). */
  async countsByKindAndState(): Promise<{ kind: string; state: string; count: number }[]> {
    const rows = await this.#db
      .selectFrom('jobs')
      .select(['kind', 'state', (eb) => eb.fn.countAll<number>().as('count')])
      .groupBy(['kind', 'state'])
      .execute();
    return rows.map((r) => ({ kind: r.kind, state: r.state, count: Number(r.count) }));
  }

  /**
   * Steps per job kind and step state (the metrics' gauge). The steps are a JSON array per job,
   * unrolled here rather than in SQL: json_each is SQLite's and jsonb_array_elements
   * PostgreSQL's, and the table is pruned per kind and target (pruneFinished), so it stays small.
   */
  async stepCountsByKindAndState(): Promise<{ kind: string; state: string; count: number }[]> {
    const counts = new Map<string, { kind: string; state: string; count: number }>();
    for (const r of await this.#db.selectFrom('jobs').select(['kind', 'steps']).execute()) {
      for (const s of stepsColumn.decode(r.steps)) {
        const key = `${r.kind}\u0000${s.state}`;
        const c = counts.get(key);
        if (c) c.count++;
        else counts.set(key, { kind: r.kind, state: s.state, count: 1 });
      }
    }
    return [...counts.values()];
  }
}

function toRecord(r: Selectable<JobTable>): JobRecord {
  return {
    id: r.id,
    kind: r.kind,
    state: r.state as JobRecordState,
    target: r.target,
    steps: stepsColumn.decode(r.steps),
    progress: r.progress,
    result: r.result === null ? null : resultColumn.decode(r.result),
    error: r.error === null ? null : errorColumn.decode(r.error),
    context: r.context === null || r.context === undefined ? null : contextColumn.decode(r.context),
    contextVersion: r.context_version ?? null,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

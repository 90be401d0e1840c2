import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { JobRepo } from './job-repo.js';

/** The scrape-time counts the metrics read from the tables (metrics/metric-sources.ts): reads only. */
export class MetricsRepo {
  #db: Kysely<Database>;
  #jobs: JobRepo;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
    this.#jobs = new JobRepo(db);
  }

  jobCounts(): Promise<{ kind: string; state: string; count: number }[]> {
    return this.#jobs.countsByKindAndState();
  }

  jobStepCounts(): Promise<{ kind: string; state: string; count: number }[]> {
    return this.#jobs.stepCountsByKindAndState();
  }

  /** Plan runs per mode, state and result (result null while a run has not ended). */
  async planRunCounts(): Promise<{ mode: string; state: string; result: string | null; count: number }[]> {
    const rows = await this.#db
      .selectFrom('plan_runs')
      .select(['mode', 'state', 'result', (eb) => eb.fn.countAll<number>().as('count')])
      .groupBy(['mode', 'state', 'result'])
      .execute();
    return rows.map((r) => ({ mode: r.mode, state: r.state, result: r.result, count: Number(r.count) }));
  }
}

import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { ReplicationService } from '../replication/replication-service.js';
import type { ArrayGroups } from '../plans/array-groups.js';
import type { IncidentLog } from '../events/incident-log.js';
import type { MetricSources } from './site-metrics.js';
import type { ReplicaService } from '../replication/replica-service.js';

/** The real sources of the scrape-time metrics: the services' own status and the journal tables. */
export function siteMetricSources(deps: {
  db: Kysely<Database>;
  replication: Pick<ReplicationService, 'statusAll'>;
  arrayGroups: Pick<ArrayGroups, 'bindings' | 'scheduler'>;
  incidents: Pick<IncidentLog, 'openCounts'>;
  replicas?: Pick<ReplicaService, 'list' | 'summary'>;
}): MetricSources {
  const { db } = deps;
  return {
    replication: async () => (await deps.replication.statusAll()).map((s) => ({ vm: s.vm, lagSeconds: s.lagSeconds, rpoSeconds: s.rpoSeconds, rpoViolated: s.rpoViolated })),
    arrayGroups: async () => Promise.all((await deps.arrayGroups.bindings()).map(async (g) => {
      const s = await deps.arrayGroups.scheduler.status(g.name);
      return { group: g.name, lagSeconds: s.lagSec, rpoViolated: s.rpoViolated };
    })),
    jobs: async () => (await db.selectFrom('jobs').select(['kind', 'state', (eb) => eb.fn.countAll<number>().as('count')]).groupBy(['kind', 'state']).execute())
      .map((r) => ({ kind: r.kind, state: r.state, count: Number(r.count) })),
    // The steps are a JSON array per job: SQLite unrolls them (json_each), so a scrape does
    // not parse every job's journal in JavaScript.
    jobSteps: async () => (await sql<{ kind: string; state: string; count: number }>`SELECT j.kind AS kind, json_extract(s.value, '$.state') AS state, count(*) AS count
      FROM jobs j, json_each(j.steps) s GROUP BY 1, 2`.execute(db)).rows.map((r) => ({ kind: r.kind, state: String(r.state), count: Number(r.count) })),
    // result: how an ended run ended (success, warnings, errors, cancelled), else its state (running, waiting, interrupted).
    planRuns: async () => {
      const rows = await db.selectFrom('plan_runs').select(['mode', 'state', 'result', (eb) => eb.fn.countAll<number>().as('count')]).groupBy(['mode', 'state', 'result']).execute();
      const out = new Map<string, { mode: string; result: string; count: number }>();
      for (const r of rows) {
        const result = r.result ?? r.state;
        const key = `${r.mode}\u0000${result}`;
        out.set(key, { mode: r.mode, result, count: (out.get(key)?.count ?? 0) + Number(r.count) });
      }
      return [...out.values()];
    },
    openIncidents: () => deps.incidents.openCounts(),
    replicas: async () => {
      if (!deps.replicas) return [];
      const out = [];
      for (const r of await deps.replicas.list()) {
        // A replica deleted between the list and its summary is simply not shown.
        const s = await deps.replicas.summary(r.id).catch(() => null);
        if (s) out.push({ replica: s.id, vm: s.vmName, sourceSite: s.sourceSite, state: s.state, points: s.storage.points, chainLength: s.storage.chainLength, bytes: s.storage.bytes + s.storage.seedBytes });
      }
      return out;
    },
  };
}

import type { StoreHandle } from '../store/store-handle.js';
import { MetricsRepo } from '../store/repos/metrics-repo.js';
import type { ReplicationService } from '../replication/replication-service.js';
import type { ArrayGroups } from '../array-groups/array-groups.js';
import type { IncidentLog } from '../events/incident-log.js';
import type { MetricSources } from './site-metrics.js';
import type { ReplicaService } from '../replication/replica-service.js';

/** The real sources of the scrape-time metrics: the services' own status and the journal tables. */
export function siteMetricSources(deps: {
  db: StoreHandle;
  replication: Pick<ReplicationService, 'statusAll'>;
  arrayGroups: Pick<ArrayGroups, 'bindings' | 'scheduler'>;
  incidents: Pick<IncidentLog, 'openCounts'>;
  replicas?: Pick<ReplicaService, 'list' | 'summary'>;
}): MetricSources {
  const counts = new MetricsRepo(deps.db);
  return {
    replication: async () =>
      (await deps.replication.statusAll()).map((s) => ({
        vm: s.vm,
        lagSeconds: s.lagSeconds,
        rpoSeconds: s.rpoSeconds,
        rpoViolated: s.rpoViolated,
      })),
    arrayGroups: async () =>
      Promise.all(
        (await deps.arrayGroups.bindings()).map(async (g) => {
          const s = await deps.arrayGroups.scheduler.status(g.name);
          return { group: g.name, lagSeconds: s.lagSec, rpoViolated: s.rpoViolated };
        }),
      ),
    jobs: () => counts.jobCounts(),
    jobSteps: () => counts.jobStepCounts(),
    // result: how an ended run ended (success, warnings, errors, cancelled), else its state (running, waiting, interrupted).
    planRuns: async () => {
      const rows = await counts.planRunCounts();
      const out = new Map<string, { mode: string; result: string; count: number }>();
      for (const r of rows) {
        const result = r.result ?? r.state;
        const key = `${r.mode}\u0000${result}`;
        out.set(key, { mode: r.mode, result, count: (out.get(key)?.count ?? 0) + r.count });
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
        if (s)
          out.push({
            replica: s.id,
            vm: s.vmName,
            sourceSite: s.sourceSite,
            state: s.state,
            points: s.storage.points,
            chainLength: s.storage.chainLength,
            bytes: s.storage.bytes + s.storage.seedBytes,
          });
      }
      return out;
    },
  };
}

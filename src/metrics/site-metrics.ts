import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Where the scrape-time figures come from (metric-sources.ts reads them from the site; tests pass fakes). */
export interface MetricSources {
  replication(): Promise<{ vm: string; lagSeconds: number | null; rpoSeconds: number; rpoViolated: boolean }[]>;
  arrayGroups(): Promise<{ group: string; lagSeconds: number | null; rpoViolated: boolean }[]>;
  jobs(): Promise<{ kind: string; state: string; count: number }[]>;
  jobSteps(): Promise<{ kind: string; state: string; count: number }[]>;
  planRuns(): Promise<{ mode: string; result: string; count: number }[]>;
  openIncidents(): Promise<{ kind: string; count: number }[]>;
  /** Replicas this site holds for its peers (the recovery side); absent: none. */
  replicas?(): Promise<
    {
      replica: string;
      vm: string;
      sourceSite: string;
      state: string;
      points: number;
      chainLength: number;
      bytes: number;
    }[]
  >;
}

const CYCLE_BUCKETS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const OUTCOMES = ['ok', 'failed'] as const;

/**
 * The site's Prometheus metrics, in a registry of its own (not prom-client's global one:
 * a test process builds several sites). Gauges are read from the site when scraped, so
 * they never go stale; counters and histograms count what happened since the server
 * started (cycles ended, API requests), as Prometheus counters do across restarts.
 */
export class SiteMetrics {
  readonly registry = new Registry();
  #cycleSeconds: Histogram<'vm'>;
  #cycles: Counter<'vm' | 'outcome'>;
  #sentBytes: Counter<'vm'>;
  #requestSeconds: Histogram<'method' | 'route' | 'status_code'>;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    // One read of each source per scrape, shared by the gauges that show parts of it (prom-client
    // collects all metrics at once); dropped once the scrape's reads have settled.
    const replication = shared(() => sources.replication());
    const groups = shared(() => sources.arrayGroups());
    const replicas = shared(async () => (sources.replicas ? sources.replicas() : []));

    gauge(
      registers,
      'mamori_replication_lag_seconds',
      'Age of the newest recovery point of a replicated VM (absent before its first point).',
      ['vm'],
      async (g) => {
        for (const r of await replication()) if (r.lagSeconds !== null) g.set({ vm: r.vm }, r.lagSeconds);
      },
    );
    gauge(
      registers,
      'mamori_replication_rpo_seconds',
      'The recovery point objective of a replicated VM.',
      ['vm'],
      async (g) => {
        for (const r of await replication()) g.set({ vm: r.vm }, r.rpoSeconds);
      },
    );
    gauge(
      registers,
      'mamori_replication_rpo_violated',
      '1 while the newest recovery point of a VM is older than its RPO, else 0.',
      ['vm'],
      async (g) => {
        for (const r of await replication()) g.set({ vm: r.vm }, r.rpoViolated ? 1 : 0);
      },
    );
    // At the recovery site: what each replica holds, so growth (a chain a failover round left
    // uncompacted, a retired replica left behind) shows before the disk fills.
    const replicaLabels: ('replica' | 'vm' | 'source_site' | 'state')[] = ['replica', 'vm', 'source_site', 'state'];
    gauge(
      registers,
      'mamori_replica_bytes',
      'Bytes on disk of a replica this site holds (its files and any seed it still reads through).',
      replicaLabels,
      async (g) => {
        for (const r of await replicas())
          g.set({ replica: r.replica, vm: r.vm, source_site: r.sourceSite, state: r.state }, r.bytes);
      },
    );
    gauge(
      registers,
      'mamori_replica_points',
      'Recovery points a replica this site holds keeps.',
      replicaLabels,
      async (g) => {
        for (const r of await replicas())
          g.set({ replica: r.replica, vm: r.vm, source_site: r.sourceSite, state: r.state }, r.points);
      },
    );
    gauge(
      registers,
      'mamori_replica_chain_length',
      'Layers a read of the newest point of a replica opens (seed + base + points); compaction keeps it bounded.',
      replicaLabels,
      async (g) => {
        for (const r of await replicas())
          g.set({ replica: r.replica, vm: r.vm, source_site: r.sourceSite, state: r.state }, r.chainLength);
      },
    );
    this.#sentBytes = new Counter({
      name: 'mamori_replication_sent_bytes_total',
      help: 'Bytes replication cycles sent to the recovery site since the server started.',
      labelNames: ['vm'],
      registers,
      collect: async () => {
        for (const r of await replication()) this.#sentBytes.inc({ vm: r.vm }, 0);
      },
    });
    this.#cycles = new Counter({
      name: 'mamori_replication_cycles_total',
      help: 'Replication cycles ended since the server started, by outcome (ok, failed).',
      labelNames: ['vm', 'outcome'],
      registers,
      collect: async () => {
        for (const r of await replication()) for (const outcome of OUTCOMES) this.#cycles.inc({ vm: r.vm, outcome }, 0);
      },
    });
    this.#cycleSeconds = new Histogram({
      name: 'mamori_replication_cycle_duration_seconds',
      help: 'Wall time of replication cycles, ok or failed.',
      labelNames: ['vm'],
      buckets: CYCLE_BUCKETS,
      registers,
    });
    gauge(
      registers,
      'mamori_array_group_lag_seconds',
      'Age of the newest array point of an array-based protection group (absent before its first).',
      ['group'],
      async (g) => {
        for (const r of await groups()) if (r.lagSeconds !== null) g.set({ group: r.group }, r.lagSeconds);
      },
    );
    gauge(
      registers,
      'mamori_array_group_rpo_violated',
      '1 while an array-based group with an RPO has no point within it, else 0.',
      ['group'],
      async (g) => {
        for (const r of await groups()) g.set({ group: r.group }, r.rpoViolated ? 1 : 0);
      },
    );
    gauge(
      registers,
      'mamori_jobs',
      'Jobs in the journal by kind and state (running, succeeded, failed); finished replication cycles are pruned to the last few per VM.',
      ['kind', 'state'],
      async (g) => {
        for (const r of await sources.jobs()) g.set({ kind: r.kind, state: r.state }, r.count);
      },
    );
    gauge(
      registers,
      'mamori_job_steps',
      'Steps of the jobs in the journal by job kind and step state (pending, running, done, failed).',
      ['kind', 'state'],
      async (g) => {
        for (const r of await sources.jobSteps()) g.set({ kind: r.kind, state: r.state }, r.count);
      },
    );
    gauge(
      registers,
      'mamori_plan_runs',
      'Recovery plan runs on record by mode (test, planned, disaster, ...) and result (running, succeeded, warnings, failed, ...).',
      ['mode', 'result'],
      async (g) => {
        for (const r of await sources.planRuns()) g.set({ mode: r.mode, result: r.result }, r.count);
      },
    );
    gauge(registers, 'mamori_incidents_open', 'Open incidents by kind (see GET /events).', ['kind'], async (g) => {
      for (const r of await sources.openIncidents()) g.set({ kind: r.kind }, r.count);
    });
    this.#requestSeconds = new Histogram({
      name: 'mamori_http_request_duration_seconds',
      help: 'Site API requests by method, route pattern and status code.',
      labelNames: ['method', 'route', 'status_code'],
      buckets: REQUEST_BUCKETS,
      registers,
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text (all families, HELP and TYPE lines included). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  cycleEnded(e: { vm: string; outcome: 'ok' | 'failed'; durationMs: number; bytesSent: number }): void {
    this.#cycles.inc({ vm: e.vm, outcome: e.outcome });
    this.#cycleSeconds.observe({ vm: e.vm }, e.durationMs / 1000);
    if (e.bytesSent > 0) this.#sentBytes.inc({ vm: e.vm }, e.bytesSent);
  }

  /** route: the route's pattern (/vms/:name), never the URL, so series stay few. */
  requestEnded(e: { method: string; route: string; statusCode: number; durationMs: number }): void {
    this.#requestSeconds.observe(
      { method: e.method, route: e.route, status_code: String(e.statusCode) },
      e.durationMs / 1000,
    );
  }
}

/** A gauge refilled from scratch at each scrape: series of VMs or groups that went away vanish. */
function gauge<L extends string>(
  registers: Registry[],
  name: string,
  help: string,
  labelNames: L[],
  fill: (g: Gauge<L>) => Promise<void>,
): Gauge<L> {
  return new Gauge<L>({
    name,
    help,
    labelNames,
    registers,
    async collect() {
      this.reset();
      await fill(this);
    },
  });
}

/**
 * fn's promise, shared by every caller until it settles. prom-client starts every collect of
 * a scrape in one synchronous loop, so they all get the same read; the next scrape reads anew.
 */
function shared<T>(fn: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | null = null;
  return () => {
    if (!current) {
      const p = fn();
      current = p;
      const drop = (): void => void (current = current === p ? null : current);
      p.then(drop, drop);
    }
    return current;
  };
}

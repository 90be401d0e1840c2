/**
 * bench/store: how long the API's two big lists take on a site of 1,000 VMs and 24,000
 * recovery points, on SQLite and on PostgreSQL (issue 20). Writes bench/results/store.json.
 *
 * The lists are those of `mamori vm list` (GET /vms) and `mamori replicate status` (GET
 * /replication). For each dialect a real `mamori serve` runs over a database seeded through
 * the store's repositories (seed-site.ts): first 1 VM with its 24 points (the baseline: the
 * same route on the same server and data folder, so the ratio is what the data size costs),
 * then 999 more (the figure). Each route is asked BENCH_REQUESTS times one after another with
 * the admin token, through the CLI's own client (cli/api-client.ts: HTTPS, the site's CA
 * pinned, one kept-alive connection, br or gzip accepted as every CLI call does), after
 * BENCH_WARMUP requests that are not counted.
 *
 * PostgreSQL is a throwaway cluster (test/harness/pg-cluster.ts: initdb in a temporary
 * folder, a unix socket, stopped by its pid), the site started with `serve --db URL`.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { SiteProcess } from '../../test/harness/site-process.js';
import { PgCluster } from '../../test/harness/pg-cluster.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { ApiClient, resolveSite } from '../../src/cli/api-client.js';
import { openStore } from '../../src/store/open-store.js';
import { SitePaths } from '../../src/core/site-paths.js';
import type { StoreDialect } from '../../src/store/store.js';
import { seedSite } from './seed-site.js';
import type { BenchFigure } from '../bench-common.js';
import type { VmView } from '../../src/vms/vm-service.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';

const VMS = Number(process.env['BENCH_VMS'] ?? 1000);
const POINTS_PER_REPLICA = Number(process.env['BENCH_POINTS_PER_REPLICA'] ?? 24);
const REQUESTS = Number(process.env['BENCH_REQUESTS'] ?? 200);
const WARMUP = Number(process.env['BENCH_WARMUP'] ?? 20);
const GOAL_MS = 50;
const ROUTES = [
  { key: 'vm_list', command: 'mamori vm list', path: '/vms' },
  { key: 'replicate_status', command: 'mamori replicate status', path: '/replication' },
] as const;
type RouteKey = (typeof ROUTES)[number]['key'];

interface Timing {
  /** The server's CPU time (user + system) per request: what the route costs whatever else the machine runs. */
  serverCpuMs: number;
  p50: number;
  p99: number;
  max: number;
  items: number;
  bytes: number;
}

/** The value at quantile q of sorted samples (nearest rank: p99 of 200 is the 198th). */
function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** CPU time a process has used, in ms (/proc/PID/stat utime + stime, in clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces), from field 3 on: utime is 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Times REQUESTS sequential GETs of each route on the running site. */
async function timeRoutes(site: SiteProcess): Promise<Record<RouteKey, Timing>> {
  const api = new ApiClient(await resolveSite({ data: site.dataDir }));
  const pid = site.serverPid!;
  const out = {} as Record<RouteKey, Timing>;
  for (const r of ROUTES) {
    let last: unknown[] = [];
    for (let i = 0; i < WARMUP; i++) last = await api.request<unknown[]>('GET', r.path);
    const ms: number[] = [];
    const cpu0 = await cpuMs(pid);
    for (let i = 0; i < REQUESTS; i++) {
      const t0 = process.hrtime.bigint();
      last = await api.request<unknown[]>('GET', r.path);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const cpu = (await cpuMs(pid)) - cpu0;
    ms.sort((a, b) => a - b);
    out[r.key] = {
      serverCpuMs: cpu / REQUESTS,
      p50: quantile(ms, 0.5),
      p99: quantile(ms, 0.99),
      max: ms.at(-1)!,
      items: last.length,
      bytes: Buffer.byteLength(JSON.stringify(last)),
    };
  }
  return out;
}

/** The lists are whole: every VM with its one disk, every replication with its stored points. */
async function checkLists(site: SiteProcess): Promise<void> {
  const api = new ApiClient(await resolveSite({ data: site.dataDir }));
  const vms = await api.request<VmView[]>('GET', '/vms');
  const bad = vms.find((v) => v.disks.length !== 1 || v.disks[0]!.name !== `${v.name}-disk0`);
  if (bad) throw new Error(`GET /vms lists ${bad.name} with disks ${JSON.stringify(bad.disks)}`);
  const status = await api.request<ReplicationStatus[]>('GET', '/replication');
  const short = status.find((s) => s.replica?.points !== POINTS_PER_REPLICA);
  if (short) throw new Error(`GET /replication lists ${short.vm} with replica ${JSON.stringify(short.replica)}`);
}

interface DialectResult {
  dialect: StoreDialect;
  baseline: Record<RouteKey, Timing>;
  full: Record<RouteKey, Timing>;
  seedMs: number;
  points: number;
  loadAverage1m: number;
}

async function runDialect(dialect: StoreDialect): Promise<DialectResult> {
  const cluster = dialect === 'postgres' ? await PgCluster.start() : null;
  let site: SiteProcess | null = null;
  try {
    const dbUrl = cluster ? await cluster.createDatabase('bench') : undefined;
    site = await SiteProcess.create(`bench-store-${dialect}`, { serveArgs: dbUrl ? ['--db', dbUrl] : [] });
    const s = site;
    // The first start makes the database, the admin token and the TLS keys; seeding needs the server down.
    await s.start();
    await s.stopServer();
    const seed = async (vms: number, from: number): Promise<number> => {
      const store = await openStore({ sqliteFile: new SitePaths(s.dataDir).database, postgresUrl: dbUrl });
      try {
        return await seedSite(store, { vms, pointsPerReplica: POINTS_PER_REPLICA, dataDir: s.dataDir, from });
      } finally {
        await store.close();
      }
    };
    let points = await seed(1, 0);
    await s.start();
    const baseline = await timeRoutes(s);
    await s.stopServer();
    const t0 = Date.now();
    points += await seed(VMS - 1, 1);
    const seedMs = Date.now() - t0;
    await s.start();
    const loadAverage1m = loadavg()[0]!;
    const full = await timeRoutes(s);
    await checkLists(s);
    await s.stopServer();
    // A figure of a list shorter than the site is no figure: every VM and every replication must be in it.
    for (const r of ROUTES)
      for (const [timing, want] of [
        [baseline[r.key], 1],
        [full[r.key], VMS],
      ] as const)
        if (timing.items !== want) throw new Error(`${dialect} ${r.command} listed ${timing.items} items, not ${want}`);
    for (const r of ROUTES)
      process.stderr.write(
        `${dialect} ${r.command}: p50 ${full[r.key].p50.toFixed(1)} ms, p99 ${full[r.key].p99.toFixed(1)} ms, ` +
          `server CPU ${full[r.key].serverCpuMs.toFixed(1)} ms/request ` +
          `(${full[r.key].items} items; 1 VM: p99 ${baseline[r.key].p99.toFixed(1)} ms)\n`,
      );
    return { dialect, baseline, full, seedMs, points, loadAverage1m };
  } finally {
    await site?.destroy();
    await cluster?.stop();
  }
}

const results: DialectResult[] = [];
for (const dialect of ['sqlite', 'postgres'] as const) results.push(await runDialect(dialect));

const r2 = (x: number): number => Number(x.toFixed(2));
const figures: BenchFigure[] = results.flatMap((d) =>
  ROUTES.map((r) => {
    const f = d.full[r.key];
    const b = d.baseline[r.key];
    return {
      metric: `api_list_p99_ms_${r.key}_${d.dialect}`,
      value: r2(f.p99),
      unit: 'ms',
      baseline: r2(b.p99),
      ratio: r2(f.p99 / b.p99),
      goal: `<= ${GOAL_MS} ms`,
      met: f.p99 <= GOAL_MS,
      route: `GET ${r.path}`,
      command: r.command,
      dialect: d.dialect,
      p50Ms: r2(f.p50),
      serverCpuMsPerRequest: r2(f.serverCpuMs),
      baselineServerCpuMsPerRequest: r2(b.serverCpuMs),
      maxMs: r2(f.max),
      baselineP50Ms: r2(b.p50),
      items: f.items,
      responseBytes: f.bytes,
    };
  }),
);
const result = {
  name: 'store',
  machine: '2 cores',
  date: new Date().toISOString(),
  vms: VMS,
  points: results[0]!.points,
  requests: REQUESTS,
  warmup: WARMUP,
  dialects: results.map((d) => ({
    dialect: d.dialect,
    seedMs: d.seedMs,
    points: d.points,
    loadAverage1m: d.loadAverage1m,
  })),
  notes:
    `Each figure is the p99 of ${REQUESTS} sequential requests (after ${WARMUP} not counted) timed in the client, as the CLI ` +
    'makes them (HTTPS with the site CA pinned, br or gzip accepted and decoded, JSON parsed, one kept-alive connection), ' +
    'against a real `mamori serve`. responseBytes is the decoded JSON; the server sends it brotli-compressed. ' +
    `The site holds ${VMS} stopped VMs with a disk each, each replicated to a peer (paused, ${POINTS_PER_REPLICA} points kept, ` +
    `the last 10 cycles' figures), and ${VMS} replicas of the peer's VMs with ${POINTS_PER_REPLICA} points each in replica_points. ` +
    'The baseline is the same route on the same server and data folder holding 1 VM and 24 points, measured first in the same run. ' +
    'PostgreSQL is a throwaway cluster on a unix socket with fsync off (reads only are timed).',
  figures,
};
await writeFile(join(repoRoot, 'bench', 'results', 'store.json'), `${JSON.stringify(result, null, 2)}\n`);
for (const f of figures) process.stdout.write(`${JSON.stringify(f)}\n`);

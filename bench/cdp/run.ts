/**
 * bench/cdp: continuous replication (issue 22). Today it measures the protected side's
 * mechanism, the write-blocking mirror onto mamori's NBD receiver (tap-iops.ts), against the
 * same guest with no tap, in the same run: one row per receiver, `cdp_tap_write_iops_vs_unprotected`
 * with `receiver` naming it. These are the parts the product figure `cdp_write_iops_vs_unprotected`
 * (>= 0.8, with shipping and the site servers) will be made of; they are reports, not that figure.
 * Writes bench/results/cdp.json.
 *
 * It also measures the product figures through two site servers (product.ts): the RPO's p99,
 * journal bytes per written byte and any-point accuracy, at 1 MiB/s and at 20 MiB/s (the test
 * guest's writer takes at most 1,000 records of 4 KiB a second: at 20 MiB/s a load writes beside
 * the log, guest-load.ts).
 *
 * The product's `cdp_write_iops_vs_unprotected` (product-iops.ts): diskbench in two guests at
 * site-a, one continuous, one not.
 *
 * And instant recovery's RTO against a copy-first recovery of the same instant (instant-rto.ts):
 * `instant_recovery_rto_vs_copy_recovery`, a 20 GiB disk holding 8 GiB.
 *
 * BENCH_CDP_ROUNDS (default 3), BENCH_CDP_MIB (64), BENCH_CDP_SECONDS (5); BENCH_CDP_PRODUCT_SECONDS
 * (600 per rate); BENCH_CDP_PRODUCT_CHECKPOINTS (500ms,1s: the checkpoint intervals the product
 * figures are measured at); BENCH_CDP_IR_DISK_GIB (20) and BENCH_CDP_IR_FILLED_GIB (8); BENCH_CDP_ONLY, a
 * comma list of sections (product, iops, tap, instant), measures those and keeps the others' rows of
 * the last run, each saying when it was measured.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../../test/harness/repo-root.js';
import { median, type BenchFigure } from '../bench-common.js';
import { tapIopsByVariant } from './tap-iops.js';
import { productRun } from './product.js';
import { instantRtoRun } from './instant-rto.js';
import { productIopsRun } from './product-iops.js';

const rounds = Number(process.env['BENCH_CDP_ROUNDS'] ?? 3);
const mib = Number(process.env['BENCH_CDP_MIB'] ?? 64);
const seconds = Number(process.env['BENCH_CDP_SECONDS'] ?? 5);

const productSeconds = Number(process.env['BENCH_CDP_PRODUCT_SECONDS'] ?? 600);
const sections = new Set((process.env['BENCH_CDP_ONLY'] ?? 'product,iops,tap,instant').split(','));
const resultFile = join(repoRoot, 'bench', 'results', 'cdp.json');
const last = (await readFile(resultFile, 'utf8')
  .then((t) => JSON.parse(t) as { date: string; workload: string; tapWorkload?: string; figures: BenchFigure[] })
  .catch(() => null)) ?? { date: '', workload: '', figures: [] };
/** The last run's rows of a section not measured now, each saying when it was measured. */
const kept = (metrics: string[]): BenchFigure[] =>
  last.figures
    .filter((f) => metrics.includes(f.metric))
    .map((f) => ({ ...f, measuredAt: f['measuredAt'] ?? last.date }));
const pct = (xs: number[], p: number): number =>
  [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const productRates = (process.env['BENCH_CDP_PRODUCT_RATES'] ?? '1,20').split(',').map(Number);
// The recovery point is the newest checkpoint the recovery site holds, so the lag, sampled at
// random, runs up to a whole interval plus the pipeline's delay, and an instant T is cut up to
// an interval (and a record's spacing) before T: the RPO's and the accuracy's goals (<= 1 s)
// are measured with checkpoints 500 ms apart; the default 1 s rows say what that interval gives.
const productCheckpoints = (process.env['BENCH_CDP_PRODUCT_CHECKPOINTS'] ?? '500ms,1s').split(',');
const RPO_GOAL_CHECKPOINT = '500ms';
// Rows of rates and intervals not measured now stay, saying when they were (rows without an
// interval were measured at 1 s).
const product: BenchFigure[] = kept([
  'cdp_rpo_p99_seconds',
  'cdp_journal_bytes_per_written_byte',
  'any_point_accuracy_seconds',
]).filter(
  (f) =>
    !sections.has('product') ||
    !productRates.some(
      (r) => f['rate'] === `${r} MiB/s` && productCheckpoints.includes((f['checkpoint'] as string | undefined) ?? '1s'),
    ),
);
// The rates of guest writes, in MiB/s (BENCH_CDP_PRODUCT_RATES, default 1,20). Up to 4 MiB/s the
// log's writer makes them all (256 records of 4 KiB a second per MiB/s); it takes at most 1,000
// records a second, so above that it writes 1 MiB/s and a load beside it (guest-load.ts) the rest.
const productRuns = productCheckpoints.flatMap((checkpoint) => productRates.map((mibps) => ({ checkpoint, mibps })));
for (const { checkpoint, mibps } of sections.has('product') ? productRuns : []) {
  const rate = mibps <= 4 ? mibps * 256 : 256;
  const extra = mibps <= 4 ? 0 : mibps - 1;
  const p = await productRun({ recordsPerSecond: rate, seconds: productSeconds, extraMiBPerSecond: extra, checkpoint });
  const asked = `${mibps} MiB/s`;
  const at =
    `${rate} log records/s${extra > 0 ? ` and ${extra} MiB/s of 1 MiB synced blocks beside` : ''} asked (${mibps} MiB/s), ` +
    `${(p.achievedBytesPerSecond / 1024 / 1024).toFixed(2)} MiB/s achieved, ${p.seconds} s, --checkpoint ${checkpoint}`;
  const rpoGoal = checkpoint === RPO_GOAL_CHECKPOINT;
  product.push(
    {
      metric: 'cdp_rpo_p99_seconds',
      rate: asked,
      checkpoint,
      value: Math.round(pct(p.lagsMs, 99)) / 1000,
      unit: 's',
      baseline: null,
      ratio: null,
      goal: rpoGoal ? '<= 1' : `report (the goal is measured at --checkpoint ${RPO_GOAL_CHECKPOINT})`,
      met: rpoGoal ? pct(p.lagsMs, 99) <= 1000 : null,
      workload: at,
      p50Seconds: Math.round(pct(p.lagsMs, 50)) / 1000,
      maxSeconds: Math.max(...p.lagsMs) / 1000,
      samples: p.lagsMs.length,
    },
    {
      metric: 'cdp_journal_bytes_per_written_byte',
      rate: asked,
      checkpoint,
      value: Math.round((p.journalBytes / p.writtenBytes) * 1000) / 1000,
      unit: 'ratio',
      baseline: p.writtenBytes,
      ratio: Math.round((p.journalBytes / p.writtenBytes) * 1000) / 1000,
      goal: '<= 1.1',
      met: p.journalBytes / p.writtenBytes <= 1.1,
      workload: at,
      journalBytes: p.journalBytes,
    },
    {
      metric: 'any_point_accuracy_seconds',
      rate: asked,
      checkpoint,
      value: Math.round(Math.max(...p.accuracyMs)) / 1000,
      unit: 's',
      baseline: null,
      ratio: null,
      goal: rpoGoal ? '<= 1' : `report (the goal is measured at --checkpoint ${RPO_GOAL_CHECKPOINT})`,
      met: rpoGoal ? Math.max(...p.accuracyMs) <= 1000 : null,
      workload: at,
      instants: p.accuracyMs.length,
    },
  );
  console.log(JSON.stringify(product.slice(-3)));
}
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
let tap: BenchFigure[];
let tapWorkload: string;
if (!sections.has('tap')) {
  tap = kept(['cdp_tap_write_iops_vs_unprotected']);
  tapWorkload = last.tapWorkload ?? last.workload;
} else {
  const r = await tapIopsByVariant({ rounds, mib, seconds, accel: 'tcg' });
  const base = r.unprotected.median;
  tap = (
    ['qemu-null', 'null', 'queued', 'durable', 'blklogwrites-file', 'mirror-blklogwrites', 'qemu-write-log-1s'] as const
  ).map((v) => ({
    metric: 'cdp_tap_write_iops_vs_unprotected',
    receiver: v,
    value: r[v].median,
    unit: 'IOPS',
    baseline: base,
    ratio: round3(r[v].median / base),
    goal: 'report (the product figure cdp_write_iops_vs_unprotected is >= 0.8)',
    met: null,
    runs: r[v].runs,
    baselineRuns: r.unprotected.runs,
  }));
  tapWorkload = `diskbench random 4 KiB writes, O_DIRECT, queue depth 1, ${seconds} s over ${mib} MiB, median of ${rounds}`;
}
let iops: BenchFigure[] = kept(['cdp_write_iops_vs_unprotected']);
if (sections.has('iops')) {
  const r = await productIopsRun({ rounds, mib, seconds: Math.max(seconds, 10) });
  console.log(JSON.stringify(r));
  const value = median(r.protected);
  const baseline = median(r.unprotected);
  iops = [
    {
      metric: 'cdp_write_iops_vs_unprotected',
      value: round3(value),
      unit: 'IOPS',
      baseline: round3(baseline),
      ratio: round3(value / baseline),
      goal: '>= 0.8',
      met: value / baseline >= 0.8,
      workload: `diskbench random 4 KiB writes (O_DIRECT, queue depth 1, ${Math.max(seconds, 10)} s over ${mib} MiB) in the test guest, started through its agent; two guests at site-a, one continuous (checkpoints every second, journal streaming to site-b), one unprotected, in turns, median of ${rounds}`,
      runs: r.protected,
      baselineRuns: r.unprotected,
    },
  ];
}
let instant: BenchFigure[] = kept(['instant_recovery_rto_vs_copy_recovery']);
if (sections.has('instant')) {
  const diskGiB = Number(process.env['BENCH_CDP_IR_DISK_GIB'] ?? 20);
  const filledGiB = Number(process.env['BENCH_CDP_IR_FILLED_GIB'] ?? 8);
  const r = await instantRtoRun({ diskGiB, filledGiB });
  console.log(JSON.stringify(r));
  const workload = `the test guest with a ${diskGiB} GiB disk holding ${filledGiB} GiB, continuous, recovered at ${r.pointTime} by a test plan run at site-b`;
  const row = (baselineName: string, copySeconds: number): BenchFigure => {
    const baseline = round3(copySeconds + r.localBootSeconds);
    return {
      metric: 'instant_recovery_rto_vs_copy_recovery',
      baselineName,
      value: round3(r.instantRtoSeconds),
      unit: 's',
      baseline,
      ratio: round3(r.instantRtoSeconds / baseline),
      goal: '<= 0.2',
      met: r.instantRtoSeconds / baseline <= 0.2,
      workload,
      copySeconds: round3(copySeconds),
      localBootSeconds: round3(r.localBootSeconds),
      instantRunSeconds: round3(r.instantRunSeconds),
      initialSyncSeconds: round3(r.initialSyncSeconds),
    };
  };
  instant = [
    // The baseline the issue names: copy the instant (through its export), then boot.
    row('copy of the instant through its export, then boot', r.copyThroughExportSeconds),
    // Fairer: the big disk's copy from the replica's local chain alone (the journal's part and
    // the small disks left out), then boot.
    row("copy of the big disk from the replica's local chain, then boot", r.copyFromReplicaSeconds),
  ];
}
const out = {
  name: 'cdp',
  machine: '2 cores, TCG',
  date: new Date().toISOString(),
  workload: `product: two site servers, the test guest's log at the rate each row names, checkpoints every second, ${productSeconds} s; tap: see tapWorkload; instant: see each row`,
  tapWorkload,
  figures: [...product, ...iops, ...tap, ...instant],
};
await writeFile(resultFile, `${JSON.stringify(out, null, 2)}\n`);
for (const f of out.figures)
  console.log(`${f.metric}${f['receiver'] ? ` (${String(f['receiver'])})` : ''}: ${f.value} (${String(f.goal)})`);

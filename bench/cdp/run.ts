/**
 * bench/cdp: continuous replication (issue 22). Today it measures the protected side's
 * mechanism, the write-blocking mirror onto mamori's NBD receiver (tap-iops.ts), against the
 * same guest with no tap, in the same run: one row per receiver, `cdp_tap_write_iops_vs_unprotected`
 * with `receiver` naming it. These are the parts the product figure `cdp_write_iops_vs_unprotected`
 * (>= 0.8, with shipping and the site servers) will be made of; they are reports, not that figure.
 * Writes bench/results/cdp.json.
 *
 * BENCH_CDP_ROUNDS (default 3), BENCH_CDP_MIB (64), BENCH_CDP_SECONDS (5).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../../test/harness/repo-root.js';
import type { BenchFigure } from '../bench-common.js';
import { tapIopsByVariant } from './tap-iops.js';

const rounds = Number(process.env['BENCH_CDP_ROUNDS'] ?? 3);
const mib = Number(process.env['BENCH_CDP_MIB'] ?? 64);
const seconds = Number(process.env['BENCH_CDP_SECONDS'] ?? 5);

const r = await tapIopsByVariant({ rounds, mib, seconds, accel: 'tcg' });
const base = r.unprotected.median;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
const figures: BenchFigure[] = (
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
const out = {
  name: 'cdp',
  machine: '2 cores, TCG',
  date: new Date().toISOString(),
  workload: `diskbench random 4 KiB writes, O_DIRECT, queue depth 1, ${seconds} s over ${mib} MiB, median of ${rounds}`,
  figures,
};
await writeFile(join(repoRoot, 'bench', 'results', 'cdp.json'), `${JSON.stringify(out, null, 2)}\n`);
for (const f of figures) console.log(`${f.metric} (${String(f['receiver'])}): ${f.value} vs ${base} = ${f.ratio}`);

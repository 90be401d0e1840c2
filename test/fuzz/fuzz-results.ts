import type { FuzzReport } from './fuzz-runner.js';

/** bench/results/fuzz.json: totals as figures (the form every benchmark writes), per-target figures and findings beside them. */
export function fuzzResultJson(
  report: FuzzReport,
  opts: { seed: number; executions: number; seconds?: number },
): unknown {
  const t = report.totals;
  return {
    name: 'fuzz',
    machine: '2 cores, TCG',
    date: new Date().toISOString(),
    seed: opts.seed,
    executionsPerTarget: opts.executions,
    ...(opts.seconds !== undefined ? { secondsPerTarget: opts.seconds } : {}),
    figures: [
      // The goal is per parser: a total can look big while one slow parser got a fraction of its share.
      {
        metric: 'fuzz_executions',
        value: t.fuzz_executions,
        unit: 'inputs',
        baseline: null,
        ratio: null,
        goal: `>= ${opts.executions.toLocaleString('en-US')} per parser`,
        met: report.targets.length > 0 && report.targets.every((r) => r.executions >= opts.executions),
      },
      {
        metric: 'fuzz_crashes',
        value: t.fuzz_crashes,
        unit: 'inputs',
        baseline: null,
        ratio: null,
        goal: '== 0',
        met: t.fuzz_crashes === 0,
      },
      {
        metric: 'fuzz_hangs',
        value: t.fuzz_hangs,
        unit: 'inputs',
        baseline: null,
        ratio: null,
        goal: '== 0',
        met: t.fuzz_hangs === 0,
      },
      {
        metric: 'slowest_input_ms',
        value: t.slowest_input_ms,
        unit: 'ms',
        baseline: null,
        ratio: null,
        goal: '< 2000',
        met: t.slowest_input_ms < 2000,
      },
    ],
    ...t,
    targets: report.targets.map((r) => ({
      name: r.name,
      executions: r.executions,
      crashes: r.crashes,
      hangs: r.hangs,
      memory: r.memory,
      slowestInputMs: r.slowestInputMs,
      executionsPerSecond: r.executionsPerSecond,
      seconds: Number(r.seconds.toFixed(1)),
      outcomes: r.outcomes,
      findings: r.findings,
    })),
  };
}

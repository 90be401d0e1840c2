import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../../test/harness/repo-root.js';
import { runFuzz, type FuzzTargetResult } from '../../test/fuzz/fuzz-runner.js';
import { fuzzResultJson } from '../../test/fuzz/fuzz-results.js';
import { runTargetIsolated } from './fuzz-isolated.js';
import { targetsNamed } from '../../test/fuzz/fuzz-targets.js';

/**
 * The long fuzz run (`make fuzz`): every target for --executions inputs (default 1,000,000)
 * or --seconds each, whichever ends first; prints a table and writes bench/results/fuzz.json.
 *   node dist/bench/fuzz/run.js [--executions N] [--seconds S] [--seed N] [--target NAME ...] [--out PATH] [--in-process]
 */
const { values } = parseArgs({
  options: {
    executions: { type: 'string', default: '1000000' },
    seconds: { type: 'string' },
    seed: { type: 'string', default: '1' },
    target: { type: 'string', multiple: true, default: [] },
    out: { type: 'string', default: join(repoRoot, 'bench', 'results', 'fuzz.json') },
    'deadline-ms': { type: 'string', default: '2000' },
    'in-process': { type: 'boolean', default: false },
  },
});

function row(r: FuzzTargetResult): string {
  return [
    r.name.padEnd(18),
    String(r.executions).padStart(9),
    String(r.executionsPerSecond).padStart(8),
    String(r.crashes).padStart(7),
    String(r.hangs).padStart(5),
    r.slowestInputMs.toFixed(1).padStart(10),
    r.seconds.toFixed(1).padStart(8),
  ].join(' ');
}

const executions = Number(values.executions);
const seconds = values.seconds !== undefined ? Number(values.seconds) : undefined;
const seed = Number(values.seed);
process.stdout.write(
  `${'target'.padEnd(18)} ${'execs'.padStart(9)} ${'exec/s'.padStart(8)} ${'crashes'.padStart(7)} ${'hangs'.padStart(5)} ${'slowest ms'.padStart(10)} ${'seconds'.padStart(8)}\n`,
);
// Each target in its own worker thread (a synchronous infinite loop is then caught too), unless --in-process.
const report = await runFuzz(targetsNamed(values.target ?? []), {
  executions,
  ...(seconds !== undefined ? { seconds } : {}),
  seed,
  deadlineMs: Number(values['deadline-ms']),
  ...(values['in-process'] ? {} : { isolate: runTargetIsolated }),
  onTargetDone: (r) => {
    process.stdout.write(
      `${row(r)}   ${Object.entries(r.outcomes)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}\n`,
    );
    for (const f of r.findings.slice(0, 5))
      process.stdout.write(`    ${f.kind} x${f.count}: ${f.error}\n${f.where.map((w) => `      at ${w}\n`).join('')}`);
  },
});
const t = report.totals;
process.stdout.write(
  `${'total'.padEnd(18)} ${String(t.fuzz_executions).padStart(9)} ${''.padStart(8)} ${String(t.fuzz_crashes).padStart(7)} ${String(t.fuzz_hangs).padStart(5)} ${t.slowest_input_ms.toFixed(1).padStart(10)}\n`,
);
await mkdir(dirname(values.out!), { recursive: true });
await writeFile(
  values.out!,
  `${JSON.stringify(fuzzResultJson(report, { seed, executions, ...(seconds !== undefined ? { seconds } : {}) }), null, 2)}\n`,
);
process.stdout.write(`wrote ${values.out}\n`);
process.exitCode = t.fuzz_crashes + t.fuzz_hangs > 0 ? 1 : 0;

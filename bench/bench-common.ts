/** Helpers the benchmarks share. */
import { readFile, writeFile } from 'node:fs/promises';

export function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Polls until fn gives a value. Benchmarks poll sparingly on purpose: each poll is often a CLI
 * process, and CPU taken from the guests under test would be charged to mamori.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  ms: number,
  everyMs: number,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * One row of bench/results/NAME.json. `met` is whether the figure reached its goal, and null
 * for a figure that has none (a report: "informational", "report ..."): a report cannot be
 * met, and a `true` there would read as a passed goal.
 */
export interface BenchFigure {
  metric: string;
  value: number;
  unit: string;
  baseline: number | null;
  ratio: number | string | null;
  goal: string;
  met: boolean | null;
  [k: string]: unknown;
}

/**
 * Replaces one figure (same metric, same disk) in a committed results file and leaves the
 * rest as they were, for a benchmark run with --only: the row carries its own measuredAt,
 * since the file's date is that of the full run.
 */
export async function replaceFigure(file: string, fig: BenchFigure): Promise<void> {
  const result = JSON.parse(await readFile(file, 'utf8')) as { figures: BenchFigure[] };
  const row = { ...fig, measuredAt: new Date().toISOString() };
  const at = result.figures.findIndex((f) => f.metric === fig.metric && f['disk'] === fig['disk']);
  if (at >= 0) result.figures[at] = row;
  else result.figures.push(row);
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
}

import fc from 'fast-check';
import { isMamoriError } from '../../src/core/mamori-error.js';
import { Deadline, HangAbort, OversizedRead, type AnyFuzzTarget } from './fuzz-target.js';

/**
 * Runs fuzz targets: for each, its seeds are built once (and kept for the process), then
 * fast-check draws mutated inputs from them with a fixed seed, and every input is parsed
 * under a deadline. An input ends in a result or a MamoriError; anything else is a crash,
 * an input over the deadline a hang, a read sized by an untrusted field a memory finding.
 * The property itself never fails, so a run counts every finding instead of stopping at
 * the first and shrinking it.
 */
export interface FuzzFinding {
  kind: 'crash' | 'hang' | 'memory';
  /** The error's name and message (or what timed out). */
  error: string;
  /** Top frames of the stack, where the error came from. */
  where: string[];
  /** How many inputs ended this way (same kind, error and place). */
  count: number;
  slowestMs: number;
  /** The first input that did: seed and mutations. */
  input: unknown;
}

export interface FuzzTargetResult {
  name: string;
  executions: number;
  crashes: number;
  hangs: number;
  /** Crashes that were oversized reads (counted in crashes too). */
  memory: number;
  slowestInputMs: number;
  /** How inputs ended: 'ok', or the MamoriError code (shows whether mutations get past the first check). */
  outcomes: Record<string, number>;
  seconds: number;
  executionsPerSecond: number;
  findings: FuzzFinding[];
}

export interface FuzzOptions {
  /** Inputs per target (default 1000). */
  executions?: number;
  /** Stop a target after this many seconds, whatever `executions` says. */
  seconds?: number;
  /** fast-check's seed: the same seed draws the same inputs. */
  seed?: number;
  /** An input taking longer is a hang (default 2000 ms). */
  deadlineMs?: number;
  /** An input whose run grows ArrayBuffer memory by more is a memory finding (default 256 MiB). */
  memoryLimitBytes?: number;
  onTargetDone?: (result: FuzzTargetResult) => void;
  /** Called with each input's description before it runs (the isolated runner's watchdog names a hang's input by it). */
  beforeInput?: (description: unknown) => void;
  /** Runs one target elsewhere (fuzz-isolated.ts: a worker thread under a watchdog) instead of in this thread. */
  isolate?: (name: string, opts: FuzzOptions) => Promise<FuzzTargetResult>;
}

export interface FuzzReport {
  targets: FuzzTargetResult[];
  totals: { fuzz_executions: number; fuzz_crashes: number; fuzz_hangs: number; slowest_input_ms: number };
}

const seedCache = new Map<string, Promise<unknown[]>>();

/** The target's seeds, built once per process. */
export function seedsOf(target: AnyFuzzTarget): Promise<unknown[]> {
  let s = seedCache.get(target.name);
  if (!s) {
    s = target.seeds();
    seedCache.set(target.name, s);
  }
  return s;
}

export async function runFuzz(targets: readonly AnyFuzzTarget[], opts: FuzzOptions = {}): Promise<FuzzReport> {
  const results: FuzzTargetResult[] = [];
  for (const t of targets) {
    const { onTargetDone: _done, isolate, ...rest } = opts;
    const r = isolate ? await isolate(t.name, rest) : await runTarget(t, opts);
    results.push(r);
    opts.onTargetDone?.(r);
  }
  return {
    targets: results,
    totals: {
      fuzz_executions: results.reduce((n, r) => n + r.executions, 0),
      fuzz_crashes: results.reduce((n, r) => n + r.crashes, 0),
      fuzz_hangs: results.reduce((n, r) => n + r.hangs, 0),
      slowest_input_ms: Math.max(0, ...results.map((r) => r.slowestInputMs)),
    },
  };
}

export async function runTarget(target: AnyFuzzTarget, opts: FuzzOptions = {}): Promise<FuzzTargetResult> {
  const deadlineMs = opts.deadlineMs ?? 2000;
  const memoryLimit = opts.memoryLimitBytes ?? 256 * 1024 * 1024;
  const seeds = await seedsOf(target);
  const findings = new Map<string, FuzzFinding>();
  const result: FuzzTargetResult = {
    name: target.name,
    executions: 0,
    crashes: 0,
    hangs: 0,
    memory: 0,
    slowestInputMs: 0,
    outcomes: {},
    seconds: 0,
    executionsPerSecond: 0,
    findings: [],
  };
  const record = (kind: FuzzFinding['kind'], e: unknown, ms: number, input: unknown): void => {
    const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    const where = e instanceof Error ? stackTop(e) : [];
    const key = `${kind}|${error.replace(/\d+/g, 'N').slice(0, 120)}|${where[0] ?? ''}`;
    const known = findings.get(key);
    if (known) {
      known.count++;
      known.slowestMs = Math.max(known.slowestMs, ms);
    } else {
      findings.set(key, {
        kind,
        error: error.slice(0, 300),
        where,
        count: 1,
        slowestMs: ms,
        input: target.describe ? target.describe(input) : input,
      });
    }
    if (kind === 'hang') result.hangs++;
    else result.crashes++;
    if (kind === 'memory') result.memory++;
  };

  const one = async (input: unknown): Promise<boolean> => {
    opts.beforeInput?.(target.describe ? target.describe(input) : input);
    const deadline = new Deadline(deadlineMs);
    const before = process.memoryUsage().arrayBuffers;
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    // An async parser that stops reading but never settles is caught by this timer; one that
    // keeps reading is stopped by the deadline its reader checks (HangAbort).
    const timedOut = new Promise<{ hang: true }>((resolve) => {
      timer = setTimeout(() => resolve({ hang: true }), deadlineMs + 500);
    });
    const outcome = await Promise.race([
      (async () => target.run(input, deadline))().then(
        () => ({ ok: true as const }),
        (error: unknown) => ({ error }),
      ),
      timedOut,
    ]);
    clearTimeout(timer);
    const ms = performance.now() - started;
    result.executions++;
    result.slowestInputMs = Math.max(result.slowestInputMs, ms);
    if ('hang' in outcome || ms > deadlineMs || ('error' in outcome && outcome.error instanceof HangAbort)) {
      record('hang', new Error(`input took over ${deadlineMs} ms`), ms, input);
    } else if ('error' in outcome && outcome.error instanceof OversizedRead) {
      record('memory', outcome.error, ms, input);
    } else if ('error' in outcome && !isMamoriError(outcome.error)) {
      record('crash', outcome.error, ms, input);
    } else if (process.memoryUsage().arrayBuffers - before > memoryLimit) {
      record(
        'memory',
        new Error(`ArrayBuffer memory grew by more than ${memoryLimit} bytes during one input`),
        ms,
        input,
      );
    } else {
      const how = 'error' in outcome && isMamoriError(outcome.error) ? outcome.error.code : 'ok';
      result.outcomes[how] = (result.outcomes[how] ?? 0) + 1;
    }
    return true;
  };

  const start = performance.now();
  const executions = opts.executions ?? 1000;
  await fc.check(fc.asyncProperty(target.inputs(seeds), one), {
    numRuns: executions,
    seed: opts.seed ?? 1,
    endOnFailure: true,
    ...(opts.seconds !== undefined
      ? { interruptAfterTimeLimit: opts.seconds * 1000, markInterruptAsFailure: false }
      : {}),
  });
  result.seconds = (performance.now() - start) / 1000;
  result.executionsPerSecond = Math.round(result.executions / Math.max(result.seconds, 1e-6));
  result.slowestInputMs = Math.round(result.slowestInputMs * 10) / 10;
  result.findings = [...findings.values()].sort((a, b) => b.count - a.count);
  return result;
}

function stackTop(e: Error): string[] {
  return (e.stack ?? '')
    .split('\n')
    .slice(1)
    .map((l) =>
      l
        .trim()
        .replace(/^at /, '')
        .replace(/file:\/\/\S*?\/(dist\/)?/, ''),
    )
    .filter((l) => !l.includes('node:internal') && !l.includes('fast-check'))
    .slice(0, 4);
}

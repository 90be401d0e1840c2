import { Worker } from 'node:worker_threads';
import type { FuzzFinding, FuzzOptions, FuzzTargetResult } from '../../test/fuzz/fuzz-runner.js';

/**
 * One target in a worker thread, watched from outside: a parser stuck in a synchronous loop
 * blocks its own thread, where no timer can fire, so only another thread sees it. The worker
 * names each input before running it; when nothing is heard for the deadline plus a margin,
 * the worker is ended and that input is the hang. The target's run stops there (the
 * inputs after it are not drawn); the result says how far it got.
 */
export type WorkerMessage =
  { kind: 'input'; input: unknown } | { kind: 'done'; result: FuzzTargetResult } | { kind: 'failed'; error: string };

export function runTargetIsolated(
  name: string,
  opts: Omit<FuzzOptions, 'onTargetDone' | 'beforeInput'>,
): Promise<FuzzTargetResult> {
  const deadlineMs = opts.deadlineMs ?? 2000;
  // Seeds are built in the worker before the first input: give that its own, longer, allowance.
  const silenceMs = (first: boolean): number => (first ? 300_000 : deadlineMs * 3 + 2000);
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./fuzz-worker.js', import.meta.url), { workerData: { name, opts } });
    let last: unknown = null;
    let inputs = 0;
    let started = performance.now();
    let timer = setTimeout(onSilence, silenceMs(true));
    function onSilence(): void {
      void worker.terminate();
      const seconds = (performance.now() - started) / 1000;
      const finding: FuzzFinding = {
        kind: 'hang',
        error: `no answer for ${silenceMs(inputs === 0)} ms: a synchronous loop or a stuck parser`,
        where: [],
        count: 1,
        slowestMs: silenceMs(inputs === 0),
        input: last,
      };
      resolve({
        name,
        executions: inputs,
        crashes: 0,
        hangs: 1,
        memory: 0,
        slowestInputMs: silenceMs(inputs === 0),
        outcomes: {},
        seconds,
        executionsPerSecond: Math.round(inputs / Math.max(seconds, 1e-6)),
        findings: [finding],
      });
    }
    worker.on('message', (m: WorkerMessage) => {
      clearTimeout(timer);
      if (m.kind === 'input') {
        if (inputs === 0) started = performance.now();
        inputs++;
        last = m.input;
        timer = setTimeout(onSilence, silenceMs(false));
      } else if (m.kind === 'done') {
        void worker.terminate();
        resolve(m.result);
      } else {
        void worker.terminate();
        reject(new Error(`fuzz target ${name} failed outside its inputs: ${m.error}`));
      }
    });
    worker.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

import { parentPort, workerData } from 'node:worker_threads';
import { runTarget, type FuzzOptions } from '../../test/fuzz/fuzz-runner.js';
import { targetsNamed } from '../../test/fuzz/fuzz-targets.js';
import type { WorkerMessage } from './fuzz-isolated.js';

/** The worker side of fuzz-isolated.ts: runs one target, naming each input before it runs. */
const { name, opts } = workerData as { name: string; opts: FuzzOptions };
const post = (m: WorkerMessage): void => parentPort!.postMessage(m);
try {
  const [target] = targetsNamed([name]);
  const result = await runTarget(target!, { ...opts, beforeInput: (input) => post({ kind: 'input', input }) });
  post({ kind: 'done', result });
} catch (e) {
  post({ kind: 'failed', error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
}

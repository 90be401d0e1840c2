import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runProcess } from '../../../src/core/run-process.js';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

/*
 * MAMORI_FAULT_POINTS is read once at load, so each case runs in a child node that passes
 * points and says how far it got before the armed one killed it.
 */
const faultModule = pathToFileURL(
  join(dirname(fileURLToPath(import.meta.url)), '../../../src/core/fault-points.js'),
).href;

/** Runs the passes in a child node; `killed` when a signal ended it (runProcess reports that as 128). */
async function run(spec: string, passes: string[]): Promise<{ killed: boolean; reached: number }> {
  const script =
    `const { faultPoint } = await import(${JSON.stringify(faultModule)});` +
    `for (const [i, p] of ${JSON.stringify(passes)}.entries()) { process.stdout.write(i + ' '); faultPoint(p); }`;
  const r = await runProcess(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, MAMORI_FAULT_POINTS: spec },
    timeoutMs: 30_000,
    okCodes: [0, 128],
  });
  const seen = r.stdout.trim().split(' ').filter(Boolean);
  return { killed: r.code === 128, reached: seen.length - 1 };
}

test('a job step point (job:KIND:STEP, colons in its name) kills at its first pass', async () => {
  const r = await run('job:replication-cycle:copy', ['job:replication-cycle:begin', 'job:replication-cycle:copy', 'x']);
  assert.deepEqual(r, { killed: true, reached: 1 });
});

test('a numeric last part is the pass count, with or without colons in the name', async () => {
  assert.deepEqual(await run('pool-desktop-done:3', Array(5).fill('pool-desktop-done')), { killed: true, reached: 2 });
  assert.deepEqual(await run('job:vm-migration:mirror:2', Array(4).fill('job:vm-migration:mirror')), {
    killed: true,
    reached: 1,
  });
});

test('unarmed points and other names pass', async () => {
  assert.deepEqual(await run('', ['job:a:b', 'c']), { killed: false, reached: 1 });
  assert.deepEqual(await run('job:a:b', ['job:a:c', 'job:a']), { killed: false, reached: 1 });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

/*
 * MAMORI_FAULT_POINTS is read once at load, so each case runs in a child node that passes
 * points and says how far it got before the armed one killed it.
 */
const faultModule = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '../../../src/core/fault-points.js')).href;

function run(spec: string, passes: string[]): { signal: NodeJS.Signals | null; reached: number } {
  const script =
    `const { faultPoint } = await import(${JSON.stringify(faultModule)});` +
    `for (const [i, p] of ${JSON.stringify(passes)}.entries()) { process.stdout.write(i + ' '); faultPoint(p); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, MAMORI_FAULT_POINTS: spec },
    encoding: 'utf8',
    timeout: 30_000,
  });
  const seen = r.stdout.trim().split(' ').filter(Boolean);
  return { signal: r.signal, reached: seen.length - 1 };
}

test('a job step point (job:KIND:STEP, colons in its name) kills at its first pass', () => {
  const r = run('job:replication-cycle:copy', ['job:replication-cycle:begin', 'job:replication-cycle:copy', 'x']);
  assert.deepEqual(r, { signal: 'SIGKILL', reached: 1 });
});

test('a numeric last part is the pass count, with or without colons in the name', () => {
  assert.deepEqual(run('pool-desktop-done:3', Array(5).fill('pool-desktop-done')), { signal: 'SIGKILL', reached: 2 });
  assert.deepEqual(run('job:vm-migration:mirror:2', Array(4).fill('job:vm-migration:mirror')), {
    signal: 'SIGKILL',
    reached: 1,
  });
});

test('unarmed points and other names pass', () => {
  assert.deepEqual(run('', ['job:a:b', 'c']), { signal: null, reached: 1 });
  assert.deepEqual(run('job:a:b', ['job:a:c', 'job:a']), { signal: null, reached: 1 });
});

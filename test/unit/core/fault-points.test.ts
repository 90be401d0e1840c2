import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../../harness/repo-root.js';

/*
 * MAMORI_FAULT_POINTS is read once when the module loads, so each case is a child process
 * that passes the points in order and prints each one it survived; the kill -9 shows as
 * SIGKILL and the last line printed says where it came.
 */
const modUrl = pathToFileURL(join(repoRoot, 'dist', 'src', 'core', 'fault-points.js')).href;

function passPoints(spec: string, points: string[]): Promise<{ signal: string | null; survived: string[] }> {
  const script = `const { faultPoint } = await import(${JSON.stringify(modUrl)});
for (const p of ${JSON.stringify(points)}) { faultPoint(p); process.stdout.write(p + '\\n'); }`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, MAMORI_FAULT_POINTS: spec },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.on('error', reject);
    child.on('close', (_code, signal) => resolve({ signal, survived: out.split('\n').filter(Boolean) }));
  });
}

test('a job step point (job:KIND:STEP) kills at its first pass: its colons are part of the name', async () => {
  const r = await passPoints('job:disk-import:convert', ['job:disk-import:register', 'job:disk-import:convert', 'x']);
  assert.equal(r.signal, 'SIGKILL');
  assert.deepEqual(r.survived, ['job:disk-import:register']);
});

test('a number after the last colon counts passes, for plain and job names alike', async () => {
  const r = await passPoints('pool-desktop-done:2, job:vm-export:copy:3', [
    'pool-desktop-done',
    'job:vm-export:copy',
    'job:vm-export:copy',
    'pool-desktop-done',
  ]);
  assert.equal(r.signal, 'SIGKILL');
  assert.deepEqual(r.survived, ['pool-desktop-done', 'job:vm-export:copy', 'job:vm-export:copy']);
});

test('no point armed: every pass is survived', async () => {
  const r = await passPoints('', ['job:vm-convert:copy', 'pool-desktop-done']);
  assert.equal(r.signal, null);
  assert.deepEqual(r.survived, ['job:vm-convert:copy', 'pool-desktop-done']);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../harness/site-process.js';
import { repoRoot } from '../../harness/repo-root.js';
import type { ConformanceRow } from '../../../src/adapters/conformance-suite.js';

/*
 * `mamori adapter test` on a deliberately broken adapter (test/fixtures/adapters/fault-adapter.mjs):
 * the suite fails at the step that breaks, says why, skips what depends on it, and exits
 * non-zero. The passing run is the ZFS adapter's, in zfs-conformance.test.ts.
 */
const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');

async function conformance(fault: string): Promise<{ code: number; rows: ConformanceRow[]; stderr: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-conformance-'));
  try {
    const cfg = join(dir, 'arrays.json');
    await writeFile(
      cfg,
      JSON.stringify({
        source: { connection: { fault }, arrayId: 'arr1', deviceId: 'ghost' },
        target: { connection: { fault }, arrayId: 'arr1' },
      }),
    );
    const r = await runCli(['--json', 'adapter', 'test', FAULT, '--config', cfg]);
    return { code: r.code, rows: r.stdout ? (JSON.parse(r.stdout) as ConformanceRow[]) : [], stderr: r.stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a broken adapter fails the conformance suite at the step that breaks, with the reason', async () => {
  const phantom = await conformance('none');
  assert.equal(phantom.code, 1);
  const failed = phantom.rows.find((r) => r.result === 'fail');
  assert.equal(failed?.step, 'discoverDevices');
  assert.match(
    failed!.detail,
    /device ghost claims the path \/nonexistent\/mamori-ghost, which does not exist on this host/,
  );
  assert.deepEqual(
    phantom.rows.slice(0, 5).map((r) => r.result),
    ['pass', 'pass', 'pass', 'pass', 'pass'],
    'the queries it answers right pass',
  );
  assert.ok(
    phantom.rows.slice(6).every((r) => r.result === 'skipped'),
    'what depends on the failed step is skipped',
  );

  const schema = await conformance('bad-schema');
  const bad = schema.rows.find((r) => r.result === 'fail')!;
  assert.equal(bad.step, 'discoverArrays');
  assert.match(bad.detail, /discoverArrays result breaks the protocol/);

  const crash = await conformance('exit');
  assert.equal(crash.rows[0]!.result, 'fail');
  assert.match(crash.rows[0]!.detail, /exited 3; its stderr ends: fault-adapter: the array controller said no/);
});

test('bad invocations are refused with the usage, and the schemas print', async () => {
  const noConfig = await runCli(['adapter', 'test', FAULT]);
  assert.equal(noConfig.code, 2, noConfig.stderr);
  assert.match(noConfig.stderr, /usage: mamori adapter test PATH\|NAME --config FILE/);
  const missing = await runCli(['adapter', 'test', '/nonexistent/adapter', '--config', '/nonexistent/cfg.json']);
  assert.match(missing.stderr, /cannot read the conformance configuration \/nonexistent\/cfg\.json/);
  const schema = await runCli(['adapter', 'schema', 'syncOnce']);
  assert.equal(schema.code, 0, schema.stderr);
  assert.deepEqual((JSON.parse(schema.stdout) as { required: string[] }).required, ['devices']);
  const unknown = await runCli(['adapter', 'schema', 'formatArray']);
  assert.match(unknown.stderr, /no command formatArray in the protocol/);
});

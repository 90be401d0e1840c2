import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdapterClient } from '../../../src/adapters/adapter-client.js';
import { repoRoot } from '../../harness/repo-root.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

/*
 * The adapter client against a real executable that breaks the protocol one way at a time
 * (test/fixtures/adapters/fault-adapter.mjs): each break is a clear, typed error, a timeout
 * kills the adapter's whole process group, and nothing hangs.
 */
const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');
const client = (fault: string, timeouts?: { queryMs: number }): AdapterClient =>
  new AdapterClient(FAULT, { fault }, timeouts ? { timeouts } : {});

async function rejectsWith(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isMamoriError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

test('a well-behaved answer is checked and returned; progress and stderr are kept apart from the response', async () => {
  const arrays = await client('none').call('discoverArrays', {});
  assert.deepEqual(
    arrays.arrays.map((a) => a.id),
    ['arr1'],
  );
  const caps = await client('none').capabilities();
  assert.ok(caps.commands.includes('syncOnce'));
});

test('each way of breaking the protocol is a clear error', async () => {
  await rejectsWith(
    client('malformed').call('discoverArrays', {}),
    'ADAPTER_FAILED',
    /stdout is not one JSON object: "this is not json"/,
  );
  await rejectsWith(
    client('exit').call('discoverArrays', {}),
    'ADAPTER_FAILED',
    /exited 3; its stderr ends: fault-adapter: the array controller said no/,
  );
  await rejectsWith(
    client('bad-schema').call('discoverArrays', {}),
    'ADAPTER_FAILED',
    /discoverArrays result breaks the protocol: result\/arrays\/0.* must have required property|result\/arrays\/0\/id must be string/,
  );
  await rejectsWith(
    client('undeclared-code').call('discoverArrays', {}),
    'ADAPTER_FAILED',
    /error code WEIRD_THING, which it does not declare/,
  );
  await assert.rejects(client('declared-error').call('discoverArrays', {}), (e: unknown) => {
    assert.ok(isMamoriError(e, 'ADAPTER_ERROR'));
    assert.match(e.message, /refused discoverArrays: the controller is busy \[CONTROLLER_BUSY\]/);
    assert.equal(e.details?.['retryable'], true, 'as the adapter declared it');
    return true;
  });
  await rejectsWith(
    client('none').call('failover', { arrayId: 'arr1', deviceIds: ['ghost'] }),
    'ADAPTER_UNSUPPORTED',
    /does not declare failover in queryCapabilities/,
  );
});

test('a missing or non-executable adapter is named as such', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-adapter-'));
  try {
    await rejectsWith(
      new AdapterClient(join(dir, 'nope'), {}).call('queryInfo', {}),
      'ADAPTER_NOT_FOUND',
      /no adapter at .*nope/,
    );
    const plain = join(dir, 'plain');
    await writeFile(plain, '#!/bin/sh\n');
    await chmod(plain, 0o644);
    await rejectsWith(
      new AdapterClient(plain, {}).call('queryInfo', {}),
      'ADAPTER_NOT_FOUND',
      /is not executable: chmod \+x it/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an adapter that does not answer is killed with its process group at the time limit', async () => {
  let child = 0;
  const c = new AdapterClient(
    FAULT,
    { fault: 'timeout' },
    {
      timeouts: { queryMs: 5000 },
      onProgress: (_c, _f, m) => (child = Number(/waiting on (\d+)/.exec(m)?.[1] ?? child)),
    },
  );
  await rejectsWith(
    c.call('discoverArrays', {}),
    'ADAPTER_TIMEOUT',
    /did not answer discoverArrays within 5 s and was killed; it last said: child \d+/,
  );
  assert.ok(child > 0, 'the progress line reached the caller');
  // Gone, or a zombie waiting for whoever reaps orphans here: either way no longer running. The
  // kill is sent before the call rejects, but its delivery is the kernel's: wait for it, do not sleep.
  // (The limit leaves a loaded machine time to start the adapter and print its child's pid.)
  let stat = '';
  for (let i = 0; i < 200; i++) {
    stat = await readFile(`/proc/${child}/stat`, 'utf8').catch(() => '');
    if (stat === '' || / Z /.test(stat)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(stat === '' || / Z /.test(stat), `the adapter's own child went with it: ${stat}`);
});

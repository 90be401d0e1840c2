import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desktopName, desktopNames } from '../../../src/pools/pool-spec.js';
import { customizationScript, customizationState } from '../../../src/pools/desktop-customization.js';
import { runWithConcurrency } from '../../../src/pools/bounded-concurrency.js';
import type { PoolSpec } from '../../../src/store/repos/pool-records.js';

const spec = (over: Partial<PoolSpec> = {}): PoolSpec => ({
  master: { vmId: 'id', name: 'master' },
  snapshot: 'v1',
  size: 3,
  spare: 0,
  namePattern: 'desk-{n}',
  persistentDiskBytes: null,
  disposableDiskBytes: null,
  storage: ['default'],
  commands: [],
  licenseCommand: null,
  kmsHost: null,
  licenseTimeoutSec: 60,
  skipLicenseActivation: false,
  concurrency: 8,
  maintenanceConcurrency: 12,
  ...over,
});

test('name patterns: {n} and {n:W}, exactly once, valid and distinct names', () => {
  assert.equal(desktopName('desk-{n}', 7), 'desk-7');
  assert.equal(desktopName('lab{n:3}', 7), 'lab007');
  assert.deepEqual(desktopNames('d{n:2}', [1, 2, 10]), ['d01', 'd02', 'd10']);
  assert.throws(() => desktopNames('desk', [1]), /must hold \{n\} exactly once/);
  assert.throws(() => desktopNames('{n}x{n}', [1]), /must hold \{n\} exactly once/);
  assert.throws(() => desktopNames('bad/{n}', [1]), /invalid desktop name/);
  assert.throws(
    () => desktopNames(`${'a'.repeat(62)}{n}`, [10]),
    /invalid desktop name/,
    'names past 63 characters are refused',
  );
});

test('the customization script runs the commands, then the licence step unless skipped', () => {
  const s = customizationScript(
    spec({ commands: ["echo 'it''s'"], licenseCommand: 'register --key K', licenseTimeoutSec: 9 }),
    'desk-1',
  );
  assert.match(s, /say start desk-1/);
  assert.match(s, /sh -c 'echo '\\''it'\\'''\\''s'\\''' >/, 'single quotes survive');
  assert.match(s, /timeout 9 sh -c 'register --key K'/);
  assert.ok(s.indexOf('echo') < s.indexOf('timeout 9'), 'commands come before activation');
  assert.doesNotMatch(
    customizationScript(spec({ licenseCommand: 'register', skipLicenseActivation: true }), 'd'),
    /timeout/,
  );
});

test("the customization state comes from the newest boot's serial lines", () => {
  const s = spec({ licenseCommand: 'register' });
  assert.deepEqual(customizationState('', false, s), { state: 'provisioned', message: null });
  assert.deepEqual(customizationState('mamori-guest hostname d\n', true, s), { state: 'customizing', message: null });
  assert.deepEqual(customizationState('mamori-guest customize start d\nmamori-guest customize done\n', true, s), {
    state: 'ready',
    message: null,
  });
  const failed = customizationState(
    'mamori-guest customize license-failed cause=exit-70 seconds=0 timeout=60 output=no route to host \n',
    true,
    s,
  );
  assert.equal(failed.state, 'customization-failed');
  assert.match(
    failed.message!,
    /^Failed to activate software license: the registration command failed \(exit-70\) after 0 s: no route to host \(register\)\. Check/,
  );
  const slow = customizationState(
    'mamori-guest customize license-failed cause=timeout seconds=60 timeout=60 output=\n',
    true,
    s,
  );
  assert.match(slow.message!, /did not finish within 60 s/);
  assert.match(
    customizationState('mamori-guest customize failed command=2 output=oops\n', true, s).message!,
    /customization command 2 failed: oops/,
  );
});

test('bounded concurrency: never more at once than the limit, and the first failure is thrown', async () => {
  let running = 0;
  let most = 0;
  await runWithConcurrency(
    Array.from({ length: 20 }, (_, i) => i),
    3,
    async () => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 2));
      running--;
    },
  );
  assert.equal(most, 3);
  const seen: number[] = [];
  await assert.rejects(
    runWithConcurrency([1, 2, 3, 4, 5], 1, async (i) => {
      seen.push(i);
      if (i === 2) throw new Error('boom');
    }),
    /boom/,
  );
  assert.deepEqual(seen, [1, 2], 'no new work after a failure');
});

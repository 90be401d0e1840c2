import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveInPool } from '../../../src/disks/pool-path.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

const pool = '/data/pools/default';

test('a relative or absolute path inside the pool resolves inside it', () => {
  assert.equal(resolveInPool(pool, 'a.qcow2'), '/data/pools/default/a.qcow2');
  assert.equal(resolveInPool(pool, 'sub/b.raw'), '/data/pools/default/sub/b.raw');
  assert.equal(resolveInPool(pool, '/data/pools/default/c.qcow2'), '/data/pools/default/c.qcow2');
});

test('paths outside the pool or through .. are refused with PATH_OUTSIDE_POOL', () => {
  for (const bad of [
    '../x.qcow2',
    'sub/../../x.qcow2',
    '/etc/passwd',
    '/data/pools/default-evil/x',
    '/data/pools/default',
    'a/..',
  ]) {
    assert.throws(
      () => resolveInPool(pool, bad),
      (e) => isMamoriError(e, 'PATH_OUTSIDE_POOL'),
      bad,
    );
  }
  assert.throws(
    () => resolveInPool(pool, ''),
    (e) => isMamoriError(e, 'INVALID_INPUT'),
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ARRAY_RPO_LIMITS,
  nextCycleAt,
  parseRpo,
  rpoStatus,
  expectedCycleMs,
} from '../../../src/replication/rpo-scheduler.js';

const base = { rpoMs: 10_000, recentCycleMs: [], failures: 0, lastAttemptEndedAt: null };

test('the first cycle starts at once', () => {
  assert.equal(nextCycleAt({ ...base, lastPointAt: null }, 1000), 1000);
});

test('a cycle starts early enough to end before the RPO runs out', () => {
  const s = { ...base, lastPointAt: 0, recentCycleMs: [2000, 3000, 2500] };
  const at = nextCycleAt(s, 0);
  // expected 3 s, x1.5, + 0.5 s margin: start by 10 - 4.5 - 0.5 = 5 s
  assert.equal(at, 5000);
  assert.ok(at + expectedCycleMs(s.recentCycleMs) * 1.5 <= 10_000);
});

test('quick cycles do not run more often than every half RPO', () => {
  assert.equal(nextCycleAt({ ...base, lastPointAt: 0, recentCycleMs: [100] }, 0), 5000);
});

test('slow cycles start at once when the deadline is already near', () => {
  assert.equal(nextCycleAt({ ...base, lastPointAt: 0, recentCycleMs: [9000] }, 1000), 1000);
});

test('failures back off exponentially, capped by a quarter RPO', () => {
  const s = { ...base, rpoMs: 60_000, lastPointAt: 0, lastAttemptEndedAt: 100_000 };
  assert.equal(nextCycleAt({ ...s, failures: 1 }, 100_000), 101_000);
  assert.equal(nextCycleAt({ ...s, failures: 3 }, 100_000), 104_000);
  assert.equal(nextCycleAt({ ...s, failures: 10 }, 100_000), 115_000);
});

test('lag and violation', () => {
  assert.deepEqual(rpoStatus({ rpoMs: 10_000, lastPointAt: null }, 5), { lagMs: null, violated: false });
  assert.deepEqual(rpoStatus({ rpoMs: 10_000, lastPointAt: 0 }, 10_000), { lagMs: 10_000, violated: false });
  assert.deepEqual(rpoStatus({ rpoMs: 10_000, lastPointAt: 0 }, 10_001), { lagMs: 10_001, violated: true });
});

test('RPO text within 1 s .. 24 h (5 s for array groups)', () => {
  assert.equal(parseRpo('30s'), 30_000);
  assert.equal(parseRpo('5s'), 5000);
  assert.equal(parseRpo('1s'), 1000);
  assert.equal(parseRpo('4s', ARRAY_RPO_LIMITS), null);
  assert.equal(parseRpo('5s', ARRAY_RPO_LIMITS), 5000);
  assert.equal(parseRpo('15m'), 900_000);
  assert.equal(parseRpo('24h'), 86_400_000);
  assert.equal(parseRpo('60'), 60_000);
  for (const bad of ['0s', '25h', '0', '-5s', '1d', 'soon', '']) assert.equal(parseRpo(bad), null, bad);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { behindOnLink, nextLateAt, saturationMessage } from '../../../src/replication/link-saturation.js';
import type { DueCycle, LinkQueueState } from '../../../src/replication/site-cycle-queue.js';

const NOW = 10_000_000;

function c(vmName: string, over: Partial<DueCycle> = {}): DueCycle {
  return {
    vmId: `id-${vmName}`,
    vmName,
    peer: 'site-b',
    rpoMs: 60_000,
    lastPointAt: NOW - 20_000,
    expectedMs: 5_000,
    dueAt: NOW - 1_000,
    ...over,
  };
}

const link = (over: Partial<LinkQueueState>): LinkQueueState => ({
  peer: 'site-b',
  limit: 1,
  inFlight: 1,
  running: [],
  queued: [],
  ...over,
});

test('a link that keeps up is not saturated: nothing waits, or what waits is within its slack', () => {
  assert.deepEqual(behindOnLink(link({ running: [c('a', { lastPointAt: NOW - 90_000 })] }), NOW), []);
  assert.deepEqual(behindOnLink(link({ running: [c('a')], queued: [c('b'), c('c')] }), NOW), []);
  // A link with room: what waits is a VM due again behind its own running cycle.
  assert.deepEqual(behindOnLink(link({ limit: 2, queued: [c('a', { lastPointAt: NOW - 90_000 })] }), NOW), []);
  // A new VM waits for its first slot: not behind until it has waited a whole RPO.
  assert.deepEqual(behindOnLink(link({ queued: [c('new', { lastPointAt: null, dueAt: NOW - 30_000 })] }), NOW), []);
});

test('behind: queued past their slack, a first sync waiting an RPO, and a running VM past its RPO while others wait', () => {
  const behind = behindOnLink(
    link({
      running: [c('db', { lastPointAt: NOW - 75_000, dueAt: NOW - 40_000 })],
      queued: [
        c('web', { lastPointAt: NOW - 58_000, dueAt: NOW - 30_000 }), // slack -3 s: late, RPO still held
        c('fresh', { lastPointAt: null, dueAt: NOW - 61_000 }),
        c('ok', { lastPointAt: NOW - 10_000 }),
        c('mail', { lastPointAt: NOW - 100_000, rpoMs: 30_000, dueAt: NOW - 80_000 }),
      ],
    }),
    NOW,
  );
  assert.deepEqual(
    behind.map((b) => [b.vm, b.state, b.place, b.lagSeconds, b.rpoSeconds]),
    [
      ['fresh', 'queued', 2, null, 60],
      ['mail', 'queued', 4, 100, 30],
      ['db', 'running', null, 75, 60],
      ['web', 'queued', 1, 58, 60],
    ],
    'furthest behind first',
  );
});

test('the incident text names the link, its limit and cap, and each VM with its lag against its RPO', () => {
  const behind = behindOnLink(
    link({
      limit: 2,
      inFlight: 2,
      running: [c('db', { lastPointAt: NOW - 75_000 })],
      queued: [c('mail', { lastPointAt: NOW - 100_000, rpoMs: 30_000, dueAt: NOW - 80_000 })],
    }),
    NOW,
  );
  assert.equal(
    saturationMessage({
      peer: 'site-b',
      limit: 2,
      queued: 1,
      behind,
      bitsPerSecond: 50_000_000,
      limitedBy: 'bandwidth',
    }),
    "the replication link to site-b cannot carry every VM's cycles in time (2 cycles in flight at most, " +
      'a cap of 50 Mbit/s now, 1 waiting; held back by its bandwidth cap): 2 VMs are behind: ' +
      'mail lag 100s against an RPO of 30s (queued #1, waiting 80s); db lag 75s against an RPO of 60s (sending now)',
  );
  const many = Array.from({ length: 13 }, (_, i) => ({
    vm: `vm${i}`,
    lagSeconds: null,
    rpoSeconds: 60,
    state: 'queued' as const,
    place: i + 1,
    waitedSeconds: 61,
  }));
  const text = saturationMessage({
    peer: 'site-b',
    limit: 1,
    queued: 13,
    behind: many,
    bitsPerSecond: null,
    limitedBy: 'concurrency',
  });
  assert.match(
    text,
    /1 cycle in flight at most, no bandwidth cap, 13 waiting; held back by the cycles in flight, not by a bandwidth cap\): 13 VMs are behind: vm0 no recovery point yet \(queued #1, waiting 61s\);/,
  );
  assert.match(text, /vm9 no recovery point yet \(queued #10, waiting 61s\); and 3 more$/);
});

test('the next instant a waiting VM falls behind, so the scheduler looks then; none while the link has room', () => {
  // b waits behind a: its slack (point 20 s old, RPO 60 s, cycles of 5 s) runs out in 35 s.
  const waiting = link({ running: [c('a', { lastPointAt: NOW - 50_000 })], queued: [c('b')] });
  assert.equal(nextLateAt(waiting, NOW), NOW + 10_000, "a's lag passes its RPO first, in 10 s");
  const later = nextLateAt(waiting, NOW + 10_000)!;
  assert.equal(later, NOW + 35_000);
  assert.deepEqual(
    behindOnLink(waiting, later - 1).map((b) => b.vm),
    ['a'],
  );
  assert.deepEqual(
    behindOnLink(waiting, later + 1)
      .map((b) => b.vm)
      .sort(),
    ['a', 'b'],
  );
  // A first sync counts as behind once it has waited a whole RPO.
  const first = link({ running: [c('a')], queued: [c('new', { lastPointAt: null, dueAt: NOW - 30_000 })] });
  assert.equal(nextLateAt(first, NOW), NOW + 30_000);
  // Room on the link, or nothing waiting: nothing to look for.
  assert.equal(nextLateAt(link({ limit: 2, queued: [c('b')] }), NOW), null);
  assert.equal(nextLateAt(link({ running: [c('a')] }), NOW), null);
});

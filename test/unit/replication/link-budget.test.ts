import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkBudget, type LinkSender } from '../../../src/replication/link-budget.js';
import { FakeBudgetClock } from '../../harness/fake-budget-clock.js';

const CHUNK = 64 * 1024;

/** A cycle that sends as fast as its throttle lets it, in chunks, until stopped; counts what went. */
function greedy(sender: LinkSender): { sent: () => number; stop: () => void } {
  let sent = 0;
  let stopped = false;
  void (async () => {
    while (!stopped) {
      await sender.throttle(CHUNK);
      if (!stopped) sent += CHUNK;
    }
  })();
  return {
    sent: () => sent,
    stop: () => {
      stopped = true;
      sender.close();
    },
  };
}

const near = (actual: number, expected: number, tolerance: number, what: string): void =>
  assert.ok(
    Math.abs(actual - expected) <= expected * tolerance,
    `${what}: ${actual} bytes, expected ${expected} within ${tolerance * 100}%`,
  );

test('three cycles on one link share it equally, and together never exceed the rate', async () => {
  const clock = new FakeBudgetClock();
  const rate = 1_000_000;
  const link = new LinkBudget(() => rate, clock);
  const cycles = [greedy(link.open()), greedy(link.open()), greedy(link.open())];
  await clock.advance(20_000);
  const sent = cycles.map((c) => c.sent());
  for (const c of cycles) c.stop();
  const total = sent.reduce((a, b) => a + b, 0);
  // The bucket's burst (0.1 s) plus one request in flight per cycle is all it may run ahead.
  assert.ok(total <= rate * 20 + rate * 0.1 + 3 * CHUNK, `total ${total}`);
  near(total, rate * 20, 0.02, 'the link is kept full');
  for (const [i, s] of sent.entries()) near(s, total / 3, 0.02, `cycle ${i}`);
});

test('max-min fair: a cycle capped below its share leaves the rest to the others', async () => {
  const clock = new FakeBudgetClock();
  const link = new LinkBudget(() => 1_000_000, clock);
  const a = greedy(link.open());
  const b = greedy(link.open());
  const slow = greedy(link.open(100_000)); // the replication's own bandwidthBps
  await clock.advance(20_000);
  near(slow.sent(), 100_000 * 20, 0.05, 'the capped cycle gets its cap');
  near(a.sent(), 450_000 * 20, 0.03, 'a gets half of what is left');
  near(b.sent(), 450_000 * 20, 0.03, 'b gets half of what is left');
  for (const c of [a, b, slow]) c.stop();
});

test('a cycle that joins late gets its share from then on, not a burst for the time it was away', async () => {
  const clock = new FakeBudgetClock();
  const link = new LinkBudget(() => 1_000_000, clock);
  const first = greedy(link.open());
  await clock.advance(10_000);
  const before = first.sent();
  const late = greedy(link.open());
  await clock.advance(10_000);
  near(late.sent(), 500_000 * 10, 0.03, 'the late cycle');
  near(first.sent() - before, 500_000 * 10, 0.03, 'the first cycle after it joined');
  // One closes: the other takes the whole link.
  late.stop();
  const mark = first.sent();
  await clock.advance(10_000);
  near(first.sent() - mark, 1_000_000 * 10, 0.03, 'alone again');
  first.stop();
});

test('the rate is read as it changes (a schedule window opening), and no cap lets writes through', async () => {
  const clock = new FakeBudgetClock();
  let rate: number | null = 1_000_000;
  const link = new LinkBudget(() => rate, clock);
  const c = greedy(link.open());
  await clock.advance(10_000);
  near(c.sent(), 10_000_000, 0.03, 'at 1 MB/s');
  rate = 250_000;
  const mark = c.sent();
  await clock.advance(10_000);
  near(c.sent() - mark, 2_500_000, 0.05, 'at 250 kB/s after the change');
  c.stop();

  rate = null;
  const free = link.open();
  let done = 0;
  for (let i = 0; i < 100; i++) void free.throttle(CHUNK).then(() => done++);
  // The budget reads the rate again within a second of sleeping on the old one.
  await clock.advance(1_000);
  assert.equal(done, 100, 'no cap: no wait');
  for (let i = 0; i < 100; i++) void free.throttle(CHUNK).then(() => done++);
  await clock.advance(0);
  assert.equal(done, 200, 'no cap: no wait at all once it is read');
  free.close();
});

test('closing a cycle releases its waiting writes, and it leaves the link', async () => {
  const clock = new FakeBudgetClock();
  const link = new LinkBudget(() => 10_000, clock);
  const s = link.open();
  let released = 0;
  for (let i = 0; i < 5; i++) void s.throttle(CHUNK).then(() => released++);
  await clock.advance(1_000);
  assert.ok(released < 5, `at 10 kB/s not all of 5 x 64 KiB went in 1 s (${released})`);
  assert.equal(link.senders, 1);
  s.close();
  await clock.advance(0);
  assert.equal(released, 5);
  assert.equal(link.senders, 0);
});

test('the budget tells when its cap last made a cycle wait: never while the link has room', async () => {
  const clock = new FakeBudgetClock();
  let rate = 1_000_000;
  const link = new LinkBudget(() => rate, clock);
  const light = link.open();
  // 64 KiB every second against 1 MB/s: always within the bucket (filled for 0.1 s), never waits.
  for (let i = 0; i < 5; i++) {
    await clock.advance(1_000);
    await light.throttle(CHUNK);
  }
  assert.equal(link.throttledAt, null);
  light.close();
  // A greedy cycle uses the cap up: it waits, and the budget says when.
  rate = 100_000;
  const heavy = greedy(link.open());
  await clock.advance(3_000);
  const at = link.throttledAt;
  assert.ok(at !== null && at > clock.now() - 1_000, `throttled at ${at}, now ${clock.now()}`);
  heavy.stop();
});

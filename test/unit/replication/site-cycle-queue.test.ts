import { test } from 'node:test';
import assert from 'node:assert/strict';
import { queueOrder, slackMs, SiteCycleQueue, type DueCycle } from '../../../src/replication/site-cycle-queue.js';

const NOW = 1_000_000;

function due(vmId: string, over: Partial<DueCycle> = {}): DueCycle {
  return {
    vmId,
    vmName: vmId,
    peer: 'site-b',
    rpoMs: 60_000,
    lastPointAt: NOW - 30_000,
    expectedMs: 5_000,
    dueAt: NOW,
    ...over,
  };
}

/** A start function whose cycles end when the test says; records starts and the most in flight. */
function cycles(): {
  start: (vmId: string) => Promise<void>;
  started: string[];
  end: (vmId: string) => Promise<void>;
  maxInFlight: () => number;
} {
  const open = new Map<string, () => void>();
  const started: string[] = [];
  let max = 0;
  return {
    started,
    start: (vmId) =>
      new Promise<void>((resolve) => {
        started.push(vmId);
        open.set(vmId, resolve);
        max = Math.max(max, open.size);
      }),
    end: async (vmId) => {
      open.get(vmId)!();
      open.delete(vmId);
      await new Promise((r) => setImmediate(r));
    },
    maxInFlight: () => max,
  };
}

test('slack: the time left before the point would be late; none for a VM without a point', () => {
  assert.equal(slackMs(due('a'), NOW), 60_000 - 30_000 - 5_000);
  assert.equal(slackMs(due('a', { lastPointAt: NOW - 70_000 }), NOW), -15_000);
  assert.equal(slackMs(due('a', { lastPointAt: null }), NOW), -Infinity);
});

test('the order: no point first, then the nearest to breaking its RPO, then the longest due', () => {
  const order = queueOrder(
    [
      due('relaxed', { lastPointAt: NOW - 1_000 }),
      due('slow-cycles', { lastPointAt: NOW - 20_000, expectedMs: 30_000 }), // slack 10 s
      due('new', { lastPointAt: null }),
      due('late', { lastPointAt: NOW - 65_000 }), // slack -10 s
      due('tight-rpo', { rpoMs: 10_000, lastPointAt: NOW - 4_000, expectedMs: 1_000 }), // slack 5 s
      due('tie-later', { lastPointAt: NOW - 1_000, dueAt: NOW + 5 }),
    ],
    NOW,
  ).map((c) => c.vmId);
  assert.deepEqual(order, ['new', 'late', 'tight-rpo', 'slow-cycles', 'relaxed', 'tie-later']);
});

test('with a limit of 1, due cycles run one at a time, most urgent first, and all of them run', async () => {
  const c = cycles();
  const q = new SiteCycleQueue({ limit: () => 1, start: c.start, now: () => NOW });
  q.due(due('a', { lastPointAt: NOW - 10_000 }));
  assert.deepEqual(c.started, ['a'], 'a link with room starts at once');
  q.due(due('b', { lastPointAt: NOW - 20_000 }));
  q.due(due('c', { lastPointAt: NOW - 50_000 }));
  q.due(due('d', { lastPointAt: null }));
  assert.deepEqual(q.place('a'), { running: true, place: null });
  assert.deepEqual(q.place('d'), { running: false, place: 1 });
  assert.deepEqual(q.place('c'), { running: false, place: 2 });
  assert.deepEqual(q.place('b'), { running: false, place: 3 });
  await c.end('a');
  await c.end('d');
  await c.end('c');
  await c.end('b');
  assert.deepEqual(c.started, ['a', 'd', 'c', 'b']);
  assert.equal(c.maxInFlight(), 1);
  assert.deepEqual(q.links(), []);
});

test('limits are per peer link; a raised limit starts waiting cycles at the next pump', async () => {
  const c = cycles();
  const limits: Record<string, number> = { 'site-b': 2, 'site-c': 1 };
  const q = new SiteCycleQueue({ limit: (p) => limits[p]!, start: c.start, now: () => NOW });
  for (const id of ['b1', 'b2', 'b3']) q.due(due(id, { peer: 'site-b' }));
  for (const id of ['c1', 'c2']) q.due(due(id, { peer: 'site-c' }));
  assert.deepEqual([...c.started].sort(), ['b1', 'b2', 'c1']);
  assert.equal(q.inFlight('site-b'), 2);
  const [b, cc] = q.links();
  assert.equal(b!.peer, 'site-b');
  assert.deepEqual(
    b!.queued.map((d) => d.vmId),
    ['b3'],
  );
  assert.deepEqual(
    cc!.running.map((d) => d.vmId),
    ['c1'],
  );
  limits['site-b'] = 3;
  q.pump();
  assert.ok(c.started.includes('b3'));
  for (const id of ['b1', 'b2', 'b3', 'c1']) await c.end(id);
  assert.ok(c.started.includes('c2'), 'c2 starts when c1 ends');
  await c.end('c2');
  assert.deepEqual([...c.started].sort(), ['b1', 'b2', 'b3', 'c1', 'c2']);
});

test('a manual cycle counts toward the limit and takes the place of the VM queued cycle', async () => {
  const c = cycles();
  const q = new SiteCycleQueue({ limit: () => 1, start: c.start, now: () => NOW });
  let endManual: () => void = () => undefined;
  const manual = q.runNow('m', 'site-b', () => new Promise<string>((r) => (endManual = () => r('done'))));
  assert.equal(q.inFlight('site-b'), 1);
  assert.deepEqual(q.place('m'), { running: true, place: null });
  q.due(due('a'));
  assert.deepEqual(c.started, [], 'the link is full while the manual cycle runs');
  q.due(due('m'));
  const again = q.runNow('m', 'site-b', async () => 'second');
  assert.equal(q.place('m').place, null, "a manual cycle drops the VM's queued one");
  assert.equal(await again, 'second');
  endManual();
  assert.equal(await manual, 'done');
  assert.deepEqual(c.started, ['a']);
  await c.end('a');
});

test('a VM due again while its cycle runs waits for it to end; removed and stopped VMs never start', async () => {
  const c = cycles();
  const q = new SiteCycleQueue({ limit: () => 1, start: c.start, now: () => NOW });
  q.due(due('a'));
  q.due(due('a'));
  assert.deepEqual(c.started, ['a']);
  assert.deepEqual(q.place('a'), { running: true, place: 1 });
  q.due(due('paused'));
  q.remove('paused');
  await c.end('a');
  assert.deepEqual(c.started, ['a', 'a'], 'its second cycle, not the removed VM');
  q.due(due('late'));
  q.stop();
  await c.end('a');
  assert.deepEqual(c.started, ['a', 'a'], 'nothing starts after stop');
});

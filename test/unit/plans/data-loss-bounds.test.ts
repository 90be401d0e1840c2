import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dataLossBasis,
  dataLossBounds,
  dataLossText,
  noDataLoss,
  storedDataLoss,
  type DataLossInput,
} from '../../../src/plans/data-loss-bounds.js';

const T = (sec: number): string => new Date(Date.parse('2026-12-05T10:00:00.000Z') + sec * 1000).toISOString();

/** A disaster: point at 0 s, VM seen at 5 s, site answered at 6 s, peer watch finding the protected site gone at 9 s, run at 20 s. */
const BASE: DataLossInput = {
  pointTime: T(0),
  lastHeartbeatAt: T(5),
  peer: { lastReachableAt: T(6), unreachableSince: T(9) },
  runStartedAt: T(20),
};

test('at least from the last heartbeat, at most from the peer watch finding the protected site gone after the last answer', () => {
  const d = dataLossBounds(BASE);
  assert.equal(d.atLeastSec, 5);
  assert.equal(d.atMostSec, 9);
  assert.deepEqual(d.atLeastFrom, { source: 'last-heartbeat', at: T(5) });
  assert.deepEqual(d.atMostFrom, { source: 'peer-watch', at: T(9) });
  assert.equal(dataLossText(d), 'between 5.0 s and 9.0 s');
  assert.match(
    dataLossBasis(d),
    /last heartbeat seen \(2026-12-05T10:00:05.000Z\).*peer watch finding the protected site gone.*if the protected site stopped when it stopped answering/,
  );
});

test("the run's start stands in when the peer watch saw no failure, or knows nothing", () => {
  const noFailure = dataLossBounds({ ...BASE, peer: { lastReachableAt: T(6), unreachableSince: null } });
  assert.deepEqual([noFailure.atMostSec, noFailure.atMostFrom.source], [20, 'run-start']);
  const noWatch = dataLossBounds({ ...BASE, peer: null });
  assert.deepEqual([noWatch.atMostSec, noWatch.atMostFrom.source], [20, 'run-start']);
  // A failure seen after the run began is later than the start: the start is the tighter bound.
  const lateFailure = dataLossBounds({ ...BASE, peer: { lastReachableAt: T(6), unreachableSince: T(25) } });
  assert.deepEqual([lateFailure.atMostSec, lateFailure.atMostFrom.source], [20, 'run-start']);
});

test('the last successful contact is never taken as the bound: the site ran on after it answered', () => {
  // Answered at 6 s, nothing failed yet: writes until the run's start are possible, so at most is 20, not 6.
  const d = dataLossBounds({ ...BASE, peer: { lastReachableAt: T(6), unreachableSince: null } });
  assert.ok(d.atMostSec! >= 20);
});

test('a time the site or VM was seen up after it bounds nothing; a site that answered after the start leaves at most unknown', () => {
  // The heartbeat (12 s) is later than the failed check (9 s): the site came back; the run's start bounds it.
  const back = dataLossBounds({ ...BASE, lastHeartbeatAt: T(12) });
  assert.deepEqual([back.atLeastSec, back.atMostSec, back.atMostFrom.source], [12, 20, 'run-start']);
  const answered = dataLossBounds({ ...BASE, peer: { lastReachableAt: T(30), unreachableSince: null } });
  assert.equal(answered.atMostSec, null);
  assert.equal(answered.atMostFrom.source, 'none');
  assert.equal(dataLossText(answered), 'at least 5.0 s (no upper bound known)');
  // Not a disaster run (no start to stand in) and no failure seen: unknown.
  assert.equal(dataLossBounds({ ...BASE, peer: null, runStartedAt: null }).atMostSec, null);
});

test('never negative, at most never below at least; a heartbeat before the point gives at least 0', () => {
  const before = dataLossBounds({ ...BASE, lastHeartbeatAt: T(-30) });
  assert.equal(before.atLeastSec, 0);
  const none = dataLossBounds({ ...BASE, lastHeartbeatAt: null, peer: null });
  assert.deepEqual([none.atLeastSec, none.atLeastFrom.source, none.atMostSec], [0, 'none', 20]);
  // A run started before the point's time (clocks of two sites): clamped, not negative.
  const odd = dataLossBounds({ pointTime: T(10), lastHeartbeatAt: null, peer: null, runStartedAt: T(8) });
  assert.deepEqual([odd.atLeastSec, odd.atMostSec], [0, 0]);
  // A heartbeat later than the bound's moment cannot happen with one clock, but the bound stays ordered.
  const skew = dataLossBounds({
    pointTime: T(0),
    lastHeartbeatAt: T(5),
    peer: { lastReachableAt: null, unreachableSince: T(9) },
    runStartedAt: T(3),
  });
  assert.ok(skew.atMostSec! >= skew.atLeastSec);
});

test('rounded outward to tenths: at least down, at most up', () => {
  const d = dataLossBounds({
    pointTime: T(0),
    lastHeartbeatAt: T(1.2999),
    peer: { lastReachableAt: T(2), unreachableSince: T(3.901) },
    runStartedAt: T(50),
  });
  assert.equal(d.atLeastSec, 1.2);
  assert.equal(d.atMostSec, 4);
});

test("a coarse point time: at least counts from the point's latest possible moment, at most from its earliest", () => {
  const d = dataLossBounds({ ...BASE, pointPrecisionSec: 1 });
  assert.equal(d.atLeastSec, 4);
  assert.equal(d.atMostSec, 9);
  // A heartbeat inside the point's second: nothing is known to be missing.
  assert.equal(dataLossBounds({ ...BASE, lastHeartbeatAt: T(0.5), pointPrecisionSec: 1 }).atLeastSec, 0);
});

test('a VM shut down before the point loses nothing; shut down after it, its stop bounds the loss', () => {
  const planned = dataLossBounds({ ...BASE, protectedStoppedAt: T(-1) });
  assert.deepEqual(planned, noDataLoss(T(-1)));
  assert.equal(dataLossText(planned), 'none');
  const late = dataLossBounds({
    ...BASE,
    protectedStoppedAt: T(3),
    lastHeartbeatAt: T(2),
    peer: null,
    runStartedAt: null,
  });
  assert.deepEqual([late.atLeastSec, late.atMostSec, late.atMostFrom.source], [2, 3, 'shut-down-before-point']);
});

test('an old run with one figure reads as "at least"; none recorded reads as unknown', () => {
  const old = storedDataLoss({ dataLossSec: 0 });
  assert.deepEqual(old, {
    atLeastSec: 0,
    atMostSec: null,
    atLeastFrom: { source: 'legacy', at: null },
    atMostFrom: { source: 'none', at: null },
  });
  assert.equal(dataLossText(old), 'at least 0.0 s (no upper bound known)');
  assert.equal(storedDataLoss({ dataLossSec: null }), null);
  assert.equal(storedDataLoss({}), null);
  assert.equal(dataLossText(null), 'unknown');
  const now = dataLossBounds(BASE);
  assert.equal(storedDataLoss({ dataLoss: now, dataLossSec: 3 }), now, 'the bounds win over a legacy figure');
});

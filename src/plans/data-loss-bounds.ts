/**
 * How much a recovered VM may have lost, as two bounds on the window of writes its recovery
 * point misses: never one figure, because the recovery site cannot know the moment the
 * protected VM made its last write.
 *
 *  - at least: the VM was seen running (its last heartbeat) this long after the point, so the
 *    writes it made in that time are not in the point.
 *  - at most: the protected site had stopped answering this long after the point. This holds
 *    when the protected site stopped when it stopped answering; a VM still running there
 *    after a cut link keeps its later writes apart (it is paused when its site learns of the
 *    failover), and they are a divergence to settle, not writes this bound can speak for.
 *
 * The time the site "stopped answering" is when the peer watch judged it gone (failed checks
 * in a row after the last one that succeeded), not the last success itself: the site ran on
 * after it answered, for up to one check interval. When the peer watch saw no failure, the run's start stands in (an
 * operator starts a disaster run once the site is gone). Either must come after the last
 * moment the site or its VM were known to be up, or it bounds nothing.
 *
 * Bounds are rounded outward to tenths of a second (at least down, at most up), so the
 * rounding never makes the interval claim more than was measured.
 */
import type { PeerContact } from '../sites/peer-watch.js';

import type { AtLeastSource, AtMostSource, DataLoss } from '../store/records/data-loss-record.js';
export type { AtLeastSource, AtMostSource, DataLoss } from '../store/records/data-loss-record.js';

export interface DataLossInput {
  /** The recovery point's time. */
  pointTime: string;
  /**
   * How coarse the point's time is: the point was taken in [pointTime, pointTime + this).
   * Array snapshots carry whole seconds (ZFS `creation`), so an array point passes 1.
   */
  pointPrecisionSec?: number;
  /** The protected VM was shut down at this time (a planned run's shutdown step). */
  protectedStoppedAt?: string | null;
  /** The protected VM's last heartbeat the recovery site saw (from the protected site's inventory). */
  lastHeartbeatAt: string | null;
  /** The peer watch's view of the protected site; null when this server has none. */
  peer: PeerContact | null;
  /** A disaster run's start; null for other runs, which do not declare the protected site gone. */
  runStartedAt: string | null;
}

const ms = (iso: string | null | undefined): number | null => {
  if (iso === null || iso === undefined) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
};

const floorTenth = (msec: number): number => Math.max(0, Math.floor(msec / 100) / 10);
const ceilTenth = (msec: number): number => Math.max(0, Math.ceil(msec / 100) / 10);

export function dataLossBounds(input: DataLossInput): DataLoss {
  const point = ms(input.pointTime);
  if (point === null) throw new RangeError(`not a point time: ${input.pointTime}`);
  const precisionMs = Math.max(0, (input.pointPrecisionSec ?? 0) * 1000);
  const stopped = ms(input.protectedStoppedAt);
  // The VM was off before the point was taken (the earliest moment it may have been): it holds every write.
  if (stopped !== null && stopped <= point) return noDataLoss(input.protectedStoppedAt!);
  // At least: from the latest moment the point may have been taken to the last heartbeat.
  const heartbeat = ms(input.lastHeartbeatAt);
  const atLeastMs = heartbeat === null ? 0 : Math.max(0, heartbeat - (point + precisionMs));
  const atLeastFrom =
    heartbeat === null
      ? { source: 'none' as const, at: null }
      : { source: 'last-heartbeat' as const, at: input.lastHeartbeatAt };

  // At most: the earliest moment the site was known gone, among those after it was last known up.
  const lastUp = Math.max(ms(input.peer?.lastReachableAt) ?? -Infinity, heartbeat ?? -Infinity, stopped ?? -Infinity);
  const candidates: { source: AtMostSource; at: string; t: number }[] = [];
  const watch = ms(input.peer?.unreachableSince);
  if (watch !== null && watch > lastUp)
    candidates.push({ source: 'peer-watch', at: input.peer!.unreachableSince!, t: watch });
  const start = ms(input.runStartedAt);
  if (start !== null && start > lastUp) candidates.push({ source: 'run-start', at: input.runStartedAt!, t: start });
  // A VM stopped after the point (a planned run's shutdown that came too late for it) wrote nothing after that.
  if (stopped !== null)
    candidates.push({ source: 'shut-down-before-point', at: input.protectedStoppedAt!, t: stopped });
  const best = candidates.sort((a, b) => a.t - b.t)[0];
  const atLeastSec = floorTenth(atLeastMs);
  if (!best) return { atLeastSec, atMostSec: null, atLeastFrom, atMostFrom: { source: 'none', at: null } };
  // The point may be later than its time (by its precision), never earlier: at most counts from its time.
  return {
    atLeastSec,
    atMostSec: Math.max(atLeastSec, ceilTenth(best.t - point)),
    atLeastFrom,
    atMostFrom: { source: best.source, at: best.at },
  };
}

/** Zero loss, known: the point was taken with the VM off. */
export function noDataLoss(stoppedAt: string): DataLoss {
  const from = { source: 'shut-down-before-point' as const, at: stoppedAt };
  return { atLeastSec: 0, atMostSec: 0, atLeastFrom: from, atMostFrom: from };
}

/**
 * A run's VM outcome as stored, of any age: runs journalled before the bounds existed hold a
 * single `dataLossSec`, which was measured as a lower bound; it reads as "at least".
 */
export function storedDataLoss(out: {
  dataLoss?: DataLoss | null | undefined;
  dataLossSec?: number | null | undefined;
}): DataLoss | null {
  if (out.dataLoss) return out.dataLoss;
  if (out.dataLossSec === undefined || out.dataLossSec === null) return null;
  return {
    atLeastSec: out.dataLossSec,
    atMostSec: null,
    atLeastFrom: { source: 'legacy', at: null },
    atMostFrom: { source: 'none', at: null },
  };
}

const SOURCE_TEXT: Record<AtLeastSource | AtMostSource, string> = {
  'last-heartbeat': "the protected VM's last heartbeat seen",
  'shut-down-before-point': 'the protected VM shut down before the point',
  'peer-watch': 'the peer watch finding the protected site gone (failed checks in a row after it last answered)',
  'run-start': "the run's start (the protected site had not been seen to fail before)",
  none: 'nothing known',
  legacy: 'a run recorded before bounds were kept',
};

/** "between 1.2 s and 4.0 s", "at least 1.2 s", "none" or "unknown": never a bare lower bound. */
export function dataLossText(d: DataLoss | null): string {
  if (d === null) return 'unknown';
  if (d.atMostSec === 0) return 'none';
  if (d.atMostSec === null) return `at least ${d.atLeastSec.toFixed(1)} s (no upper bound known)`;
  return `between ${d.atLeastSec.toFixed(1)} s and ${d.atMostSec.toFixed(1)} s`;
}

/** Where each bound came from, for reports. */
export function dataLossBasis(d: DataLoss | null): string {
  if (d === null) return 'no point or nothing known of the protected VM';
  const at = (x: { at: string | null }) => (x.at ? ` (${x.at})` : '');
  if (d.atMostSec === 0) return `${SOURCE_TEXT[d.atMostFrom.source]}${at(d.atMostFrom)}`;
  return (
    `at least from ${SOURCE_TEXT[d.atLeastFrom.source]}${at(d.atLeastFrom)}; at most from ${SOURCE_TEXT[d.atMostFrom.source]}${at(d.atMostFrom)}` +
    (d.atMostFrom.source === 'peer-watch' || d.atMostFrom.source === 'run-start'
      ? ', if the protected site stopped when it stopped answering'
      : '')
  );
}

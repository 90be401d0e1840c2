import type { Snapshot } from './zfs-commands.js';

/** How many of its own points the adapter keeps on each side (the newest common one always among them). */
export const POINTS_KEPT = 3;

const POINT_RE = /^mamori-(\d{8}T\d{6}Z)-(\d+)$/;

/** Whether a snapshot is one of the adapter's points (the only snapshots it ever destroys). */
export function isPoint(name: string): boolean {
  return POINT_RE.test(name);
}

/**
 * `mamori-<YYYYMMDDTHHMMSSZ>-<seq>`: the time tells a person when; the sequence, one more
 * than any point either side holds, keeps names unique and ordered even when two points
 * fall in one second or a clock steps back.
 */
export function nextPointName(now: Date, ...sides: readonly Snapshot[][]): string {
  let seq = 0;
  for (const snaps of sides) {
    for (const s of snaps) {
      const m = POINT_RE.exec(s.name);
      if (m) seq = Math.max(seq, Number(m[2]));
    }
  }
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `mamori-${stamp}-${seq + 1}`;
}

/** The newest of the adapter's points on one side. */
export function newestPoint(snaps: readonly Snapshot[]): Snapshot | null {
  for (let i = snaps.length - 1; i >= 0; i--) if (isPoint(snaps[i]!.name)) return snaps[i]!;
  return null;
}

/**
 * The newest snapshot both sides hold: the same guid (a name alone proves nothing; a
 * snapshot of that name may have been taken again). Any snapshot counts, the operator's
 * too, since an incremental send works from any common one.
 */
export function newestCommon(local: readonly Snapshot[], peer: readonly Snapshot[]): Snapshot | null {
  const peerGuids = new Set(peer.map((s) => s.guid));
  for (let i = local.length - 1; i >= 0; i--) if (peerGuids.has(local[i]!.guid)) return local[i]!;
  return null;
}

/** The adapter's points beyond the newest `keep`, never one named in `protect` (the common point, a test copy's origin). */
export function pointsToPrune(snaps: readonly Snapshot[], keep: number, protect: ReadonlySet<string>): Snapshot[] {
  const points = snaps.filter((s) => isPoint(s.name));
  return points.slice(0, Math.max(0, points.length - keep)).filter((s) => !protect.has(s.name));
}

import { seconds } from './format';

/** A recovery point as the points route gives it: when its data is from, and when it was committed. */
export interface LagPoint {
  time: string;
  committedAt: string;
}

const W = 640;
const H = 220;
const PAD = { left: 64, right: 12, top: 12, bottom: 28 };

/**
 * Replication lag over time, drawn from the recovery points: the lag at a moment is how old
 * the newest committed point is, so it climbs until a commit and drops to that point's age.
 * The RPO target is the dashed line; lag above it is an RPO violation.
 */
export function LagChart({ points, rpoSeconds, now }: { points: LagPoint[]; rpoSeconds: number; now: number }) {
  const ps = points.map((p) => ({ t: Date.parse(p.time), c: Date.parse(p.committedAt) })).sort((a, b) => a.c - b.c);
  if (ps.length === 0)
    return <p className="muted">No recovery point yet: the lag starts once the first one is committed.</p>;
  // (time, lag seconds) corners of the saw-tooth: before and after each commit, then now.
  const corners: [number, number][] = [];
  ps.forEach((p, i) => {
    const prev = ps[i - 1];
    if (prev) corners.push([p.c, (p.c - prev.t) / 1000]);
    corners.push([p.c, (p.c - p.t) / 1000]);
  });
  const last = ps[ps.length - 1]!;
  corners.push([now, (now - last.t) / 1000]);
  const t0 = corners[0]![0];
  const t1 = Math.max(now, t0 + 1000);
  const maxLag = Math.max(1, ...corners.map((c) => c[1]));
  // Headroom above the higher of the RPO and the worst lag. An RPO far above every lag (1 h
  // against cycles of seconds) would flatten the saw-tooth: then the scale is the lag's and the
  // RPO line sits on the top edge, marked as off the scale.
  const offScale = rpoSeconds > maxLag * 10;
  const yMax = offScale ? maxLag * 1.3 : Math.max(rpoSeconds, maxLag) * 1.15;
  const x = (t: number): number => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (s: number): number => H - PAD.bottom - (s / yMax) * (H - PAD.top - PAD.bottom);
  const path = corners.map(([t, s], i) => `${i === 0 ? 'M' : 'L'}${x(t).toFixed(1)},${y(s).toFixed(1)}`).join(' ');
  const ticks = [0, yMax / 2, yMax];
  const yRpo = offScale ? PAD.top : y(rpoSeconds);
  return (
    <svg className="lag-chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label="replication lag over time">
      {ticks.map((s) => (
        <g key={s}>
          <line x1={PAD.left} x2={W - PAD.right} y1={y(s)} y2={y(s)} className="grid" />
          <text x={PAD.left - 6} y={y(s) + 4} textAnchor="end">
            {seconds(s)}
          </text>
        </g>
      ))}
      <line className="rpo-line" x1={PAD.left} x2={W - PAD.right} y1={yRpo} y2={yRpo} />
      <text className="rpo-label" x={W - PAD.right} y={yRpo + (offScale ? 14 : -4)} textAnchor="end">
        RPO {seconds(rpoSeconds)}
        {offScale ? ' (above the scale)' : ''}
      </text>
      <path className="lag-line" d={path} />
      {ps.map((p) => (
        <circle key={p.c} className="commit" cx={x(p.c)} cy={y((p.c - p.t) / 1000)} r={3} />
      ))}
      <text x={PAD.left} y={H - 8}>
        {new Date(t0).toLocaleTimeString()}
      </text>
      <text x={W - PAD.right} y={H - 8} textAnchor="end">
        now
      </text>
    </svg>
  );
}

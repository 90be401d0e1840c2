/**
 * When to start the next replication cycle so the recovery site's newest point is never
 * older than the RPO. Pure: times in, times out; the service owns the timers.
 *
 * A point is stamped with the instant its cycle froze the disks (the fleecing instant) and
 * becomes usable when that cycle ends. For the lag (now - newest point's time) to stay
 * within the RPO, the next cycle must *end* before lastPointAt + rpo, so it starts
 * early by its expected duration with a safety factor.
 */
export interface RpoInputs {
  rpoMs: number;
  /** Fleecing instant of the newest recovery point; null before the first. */
  lastPointAt: number | null;
  /** Durations of recent successful cycles, newest last. */
  recentCycleMs: readonly number[];
  /** Consecutive failed attempts since the last success. */
  failures: number;
  /** When the last attempt ended (success or not); null if none. */
  lastAttemptEndedAt: number | null;
}

/**
 * Host-based replication down to 1 s: a cycle costs a few hundred ms on the product path (the
 * staging daemon lives across cycles, no process starts), so a 1-2 s RPO holds for a guest
 * writing a MiB a second (bench/results/wan.json). Array groups keep 5 s (ARRAY_RPO_LIMITS):
 * a storage array's snapshot and send are not that cheap.
 */
export const RPO_LIMITS = { minMs: 1_000, maxMs: 24 * 3600_000 } as const;
export const ARRAY_RPO_LIMITS = { minMs: 5_000, maxMs: 24 * 3600_000 } as const;

/** Slack on top of the expected duration: cycles vary with how much the guest wrote. */
const SAFETY = 1.5;
const MARGIN_MS = 500;
const MAX_BACKOFF_MS = 60_000;

/** Expected duration: the slowest of the last few cycles (a burst of writes repeats). */
export function expectedCycleMs(recent: readonly number[]): number {
  const last = recent.slice(-5);
  return last.length === 0 ? 0 : Math.max(...last);
}

export function nextCycleAt(s: RpoInputs, now: number): number {
  if (s.lastPointAt === null) return now;
  if (s.failures > 0) {
    // Retry soon but not in a tight loop: 1 s, 2 s, 4 s ... capped, and never slower than a quarter RPO.
    const backoff = Math.min(1000 * 2 ** (s.failures - 1), MAX_BACKOFF_MS, Math.max(1000, s.rpoMs / 4));
    return Math.max(now, (s.lastAttemptEndedAt ?? now) + backoff);
  }
  const expected = expectedCycleMs(s.recentCycleMs);
  const latestStart = s.lastPointAt + s.rpoMs - expected * SAFETY - MARGIN_MS;
  // Quick cycles run every half RPO, which keeps the lag well inside it; slow ones as late
  // as still meets it.
  const halfway = s.lastPointAt + s.rpoMs / 2;
  return Math.max(now, Math.min(latestStart, halfway));
}

export interface RpoStatus {
  lagMs: number | null;
  violated: boolean;
}

export function rpoStatus(s: Pick<RpoInputs, 'rpoMs' | 'lastPointAt'>, now: number): RpoStatus {
  if (s.lastPointAt === null) return { lagMs: null, violated: false };
  const lagMs = now - s.lastPointAt;
  return { lagMs, violated: lagMs > s.rpoMs };
}

/** Parses "5s", "30s", "15m", "1h", "24h" (or plain seconds) within the RPO limits. */
export function parseRpo(text: string, limits: { minMs: number; maxMs: number } = RPO_LIMITS): number | null {
  const m = /^(\d+)\s*(s|m|h)?$/.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * { s: 1000, m: 60_000, h: 3600_000 }[(m[2] ?? 's') as 's' | 'm' | 'h'];
  return ms >= limits.minMs && ms <= limits.maxMs ? ms : null;
}

import { MamoriError } from '../core/mamori-error.js';

/**
 * A peer link's bandwidth limit and when it applies: `--bandwidth 50M --schedule 'Mon-Fri
 * 08:00-18:00,Sat 09:00-12:00'` caps replication to 50 Mbit/s inside those windows and lets
 * it run at the full rate outside them; no schedule caps it always. Windows are in the site
 * server's local time zone (the host's TZ), as an operator reads office hours. Pure: parse
 * once, then ask for the rate at an instant.
 */

/** Sunday 0 .. Saturday 6, as Date.getDay(). */
const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

export interface ScheduleWindow {
  /** The days a window starts on (0 Sunday .. 6 Saturday). */
  days: readonly number[];
  /** Minutes after local midnight; end <= start runs past midnight into the next day. */
  startMinute: number;
  endMinute: number;
}

export const LINK_LIMITS = {
  /** 64 kbit/s: below it a cycle's requests would time out on the wire. */
  minBitsPerSecond: 64_000,
  maxBitsPerSecond: 400_000_000_000,
  maxWindows: 32,
  maxScheduleLength: 1000,
  maxConcurrency: 64,
} as const;

/**
 * "50M" is 50 Mbit/s (bits, decimal: operators and link contracts count in Mbit/s); K, M, G
 * with an optional fraction ("1.5G"), an optional "bit/s" or "bps" ("50Mbit/s"). Returns bits
 * per second; "none" returns null (no limit). Anything else is refused: a byte suffix ("MB")
 * would be off by eight, so it is not guessed at.
 */
export function parseLinkBandwidth(text: string): number | null {
  const t = text.trim();
  if (t.toLowerCase() === 'none') return null;
  const m = /^(\d+(?:\.\d+)?)\s*([kKmMgG])(?:bit\/s|bps|bit)?$/.exec(t);
  if (!m)
    throw new MamoriError(
      'INVALID_INPUT',
      `bandwidth ${JSON.stringify(text)} is not understood: give bits per second as 500K, 50M or 1G (50M = 50 Mbit/s), or none to remove the limit`,
      { details: { bandwidth: text } },
    );
  const scale = { k: 1e3, m: 1e6, g: 1e9 }[m[2]!.toLowerCase() as 'k' | 'm' | 'g'];
  const bits = Math.round(Number(m[1]) * scale);
  if (bits < LINK_LIMITS.minBitsPerSecond || bits > LINK_LIMITS.maxBitsPerSecond)
    throw new MamoriError('OUT_OF_RANGE', `bandwidth ${text} is out of range: give 64K to 400G (bits per second)`, {
      details: { bandwidth: text },
    });
  return bits;
}

/** Bits per second as the CLI takes it back: "50M", "1.5G", "64K". */
export function formatLinkBandwidth(bits: number): string {
  for (const [unit, scale] of [
    ['G', 1e9],
    ['M', 1e6],
    ['K', 1e3],
  ] as const) {
    if (bits >= scale) return `${Number((bits / scale).toFixed(3))}${unit}`;
  }
  return `${bits / 1e3}K`;
}

/**
 * Parses "Mon-Fri 08:00-18:00,Sat 09:00-12:00": windows separated by commas, each days (a
 * day, a range of days such as Mon-Fri or Fri-Mon, or Daily) and a time range HH:MM-HH:MM
 * (24:00 ends at midnight; an end before the start runs over midnight). Strict: any other
 * text is refused with LINK_SCHEDULE_INVALID naming the window at fault.
 */
export function parseBandwidthSchedule(text: string): ScheduleWindow[] {
  if (text.length > LINK_LIMITS.maxScheduleLength) throw invalid(text, text.slice(0, 40), 'it is too long');
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length > LINK_LIMITS.maxWindows)
    throw invalid(text, parts[LINK_LIMITS.maxWindows]!, `more than ${LINK_LIMITS.maxWindows} windows`);
  return parts.map((part) => parseWindow(text, part));
}

function parseWindow(all: string, part: string): ScheduleWindow {
  const m = /^([A-Za-z]+(?:-[A-Za-z]+)?)\s+(\d{2}):(\d{2})-(\d{2}):(\d{2})$/.exec(part);
  if (!m) throw invalid(all, part, "write a window as DAYS HH:MM-HH:MM, e.g. 'Mon-Fri 08:00-18:00'");
  const days = parseDays(all, part, m[1]!);
  const start = minuteOf(all, part, m[2]!, m[3]!);
  const end = minuteOf(all, part, m[4]!, m[5]!);
  if (start === end) throw invalid(all, part, 'it starts and ends at the same time');
  if (start === 24 * 60) throw invalid(all, part, 'a window cannot start at 24:00; use 00:00');
  return { days, startMinute: start, endMinute: end === 24 * 60 ? 0 : end };
}

function parseDays(all: string, part: string, text: string): number[] {
  if (text.toLowerCase() === 'daily') return [0, 1, 2, 3, 4, 5, 6];
  const [from, to] = text.split('-').map((d) => dayOf(all, part, d));
  if (to === undefined) return [from!];
  const days: number[] = [];
  for (let d = from!; ; d = (d + 1) % 7) {
    days.push(d);
    if (d === to) break;
  }
  return days;
}

function dayOf(all: string, part: string, text: string): number {
  const i = DAY_NAMES.indexOf(text.toLowerCase() as (typeof DAY_NAMES)[number]);
  if (i < 0) throw invalid(all, part, `${JSON.stringify(text)} is not a day: use Mon Tue Wed Thu Fri Sat Sun or Daily`);
  return i;
}

function minuteOf(all: string, part: string, hh: string, mm: string): number {
  const h = Number(hh);
  const min = Number(mm);
  if (h > 24 || min > 59 || (h === 24 && min !== 0))
    throw invalid(all, part, `${hh}:${mm} is not a time of day (00:00 to 24:00)`);
  return h * 60 + min;
}

function invalid(schedule: string, window: string, reason: string): MamoriError {
  return new MamoriError(
    'LINK_SCHEDULE_INVALID',
    `bandwidth schedule ${JSON.stringify(schedule)}: window ${JSON.stringify(window)}: ${reason}. ` +
      "Give windows as 'Mon-Fri 08:00-18:00,Sat 09:00-12:00' (local time of this site)",
    { details: { schedule, window, reason } },
  );
}

/** Whether the instant falls in one of the windows, read in the local time zone. */
export function inSchedule(windows: readonly ScheduleWindow[], at: Date): boolean {
  const day = at.getDay();
  const minute = at.getHours() * 60 + at.getMinutes();
  const yesterday = (day + 6) % 7;
  return windows.some((w) => {
    if (w.endMinute > w.startMinute) return w.days.includes(day) && minute >= w.startMinute && minute < w.endMinute;
    // Over midnight: the evening of a listed day, or the early hours after one.
    return (w.days.includes(day) && minute >= w.startMinute) || (w.days.includes(yesterday) && minute < w.endMinute);
  });
}

/** A peer link's limit as stored: bits per second, and the schedule text it applies in (null: always). */
export interface LinkLimit {
  bitsPerSecond: number | null;
  schedule: string | null;
}

/** The cap in force at `at`, in bytes per second; null: no cap (no limit, or outside the schedule). */
export function linkRateAt(limit: LinkLimit, windows: readonly ScheduleWindow[] | null, at: Date): number | null {
  if (limit.bitsPerSecond === null) return null;
  if (windows !== null && !inSchedule(windows, at)) return null;
  return limit.bitsPerSecond / 8;
}

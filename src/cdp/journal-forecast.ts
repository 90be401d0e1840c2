/*
 * How much room a continuous replica's journal will take, from what it holds: the bytes of its
 * epochs over the time they cover is the rate the guest writes (its journal's share of it), and
 * a window's worth of that is what the recovery site must hold. Epochs leave the window whole
 * (recovery-journals.ts), and a new one starts every quarter window, so up to a quarter more
 * than the window is held at once.
 */

/** What a replica's journal holds now (RecoveryJournals.usage). */
export interface JournalUsage {
  /** Bytes of every epoch's journals (segments, indexes, checkpoints). */
  bytes: number;
  /** The oldest and newest checkpoint held (µs since the epoch). */
  fromUs: number;
  toUs: number;
  /** The window the source asked for (ms). */
  windowMs: number;
}

export interface JournalForecast {
  bytes: number;
  /** Null until the journal covers `MIN_SPAN_MS`: a rate from a few seconds says little. */
  bytesPerSecond: number | null;
  windowSeconds: number;
  /** What a whole window of writes at that rate takes, epochs' overlap included; null with the rate. */
  neededBytes: number | null;
  /** What the journal may grow into: its bytes and the filesystem's free space. */
  availableBytes: number;
  /** Whether the window fits; null until the rate is known. */
  fits: boolean | null;
}

/** The journal covers at least this much time before its rate is taken as the guest's. */
export const MIN_SPAN_MS = 60_000;
/** Epochs leave whole: the journal holds up to a quarter window more than the window. */
const EPOCH_OVERLAP = 1.25;

export function forecastJournal(usage: JournalUsage, freeBytes: number): JournalForecast {
  const spanMs = (usage.toUs - usage.fromUs) / 1000;
  const availableBytes = usage.bytes + freeBytes;
  const windowSeconds = usage.windowMs / 1000;
  if (spanMs < MIN_SPAN_MS)
    return { bytes: usage.bytes, bytesPerSecond: null, windowSeconds, neededBytes: null, availableBytes, fits: null };
  const bytesPerSecond = usage.bytes / (spanMs / 1000);
  const neededBytes = Math.ceil(bytesPerSecond * windowSeconds * EPOCH_OVERLAP);
  return {
    bytes: usage.bytes,
    bytesPerSecond: Math.round(bytesPerSecond),
    windowSeconds,
    neededBytes,
    availableBytes,
    fits: neededBytes <= availableBytes,
  };
}

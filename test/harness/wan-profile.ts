/**
 * A WAN link the two-site harness can emulate (issue 21): a rate in bytes per second and a
 * round-trip time. Benches and tests name a profile by its `name`.
 */
export interface WanProfile {
  readonly name: WanProfileName;
  /** Bytes per second, each direction. */
  readonly rateBps: number;
  /** Round trip in milliseconds: each direction adds half. */
  readonly rttMs: number;
}

export type WanProfileName = '1g-10ms' | '100m-50ms' | '20m-100ms';

export const WAN_PROFILES = {
  '1g-10ms': { name: '1g-10ms', rateBps: 125_000_000, rttMs: 10 },
  '100m-50ms': { name: '100m-50ms', rateBps: 12_500_000, rttMs: 50 },
  '20m-100ms': { name: '20m-100ms', rateBps: 2_500_000, rttMs: 100 },
} as const satisfies Record<WanProfileName, WanProfile>;

export const WAN_PROFILE_NAMES = Object.keys(WAN_PROFILES) as WanProfileName[];

export function wanProfile(p: WanProfile | WanProfileName): WanProfile {
  if (typeof p !== 'string') return p;
  const found = (WAN_PROFILES as Record<string, WanProfile>)[p];
  if (!found) throw new Error(`unknown WAN profile ${JSON.stringify(p)} (known: ${WAN_PROFILE_NAMES.join(', ')})`);
  return found;
}

/** Bytes a link of this profile holds in flight: rate x RTT. */
export function bandwidthDelayProduct(p: WanProfile): number {
  return Math.ceil((p.rateBps * p.rttMs) / 1000);
}

/**
 * The token bucket (tc tbf) of one direction. The burst is 4 ms at the rate (a HZ=250 tick,
 * what tbf needs to keep a TCP sender at the rate) with a floor of 32 KiB (a burst below a few
 * full segments starves TCP at 20 Mbit/s). It stays below RTT/2 at the rate for every profile,
 * so a transfer of N bytes through the link can never beat N / rate, even with a full bucket:
 * the bytes it lets through early are still delayed by RTT/2. The queue holds one
 * bandwidth-delay product (a router buffer sized the classic way), at least 256 KiB.
 */
export function tbfParams(p: WanProfile): { rateBit: number; burstBytes: number; limitBytes: number } {
  const burstBytes = Math.max(32 * 1024, Math.ceil(p.rateBps * 0.004));
  return {
    rateBit: p.rateBps * 8,
    burstBytes,
    limitBytes: Math.max(256 * 1024, bandwidthDelayProduct(p), 4 * burstBytes),
  };
}

/**
 * What one direction of one forwarded connection may hold in the delay line: what the link
 * carries during RTT/2 (the steady state at full rate), plus a margin for the bucket's burst
 * and a chunk or two read at once. A sender that outruns the link (or a receiver that stops
 * reading) is held back by TCP once this is full, as it would be by a real link's window.
 */
export function delayBufferBytes(p: WanProfile): number {
  return Math.ceil((p.rateBps * p.rttMs) / 2000) + tbfParams(p).burstBytes + 256 * 1024;
}

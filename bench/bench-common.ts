/** Helpers the benchmarks share. */

export function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Polls until fn gives a value. Benchmarks poll sparingly on purpose: each poll is often a CLI
 * process, and CPU taken from the guests under test would be charged to mamori.
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms: number, everyMs: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

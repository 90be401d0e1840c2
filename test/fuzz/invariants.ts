/**
 * Beyond "no exception": what a parser returns is used to size copies, place reads and name
 * things, so its numbers must be exact non-negative integers. A target that finds one that
 * is not throws this (a TypeError, so the runner counts a crash with the field named).
 */
export function exactSizes(what: string, fields: Record<string, unknown>): void {
  const bad = Object.entries(fields).filter(([, v]) => typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0);
  if (bad.length > 0) throw new TypeError(`${what} returned ${bad.map(([k, v]) => `${k} = ${String(v)}`).join(', ')}`);
}

/**
 * Named points where a test can make the server die as a power cut would: SIGKILL, no
 * cleanup, no flush. Resumable operations are only proven resumable by cutting them at a
 * known place, and a timed kill from outside lands anywhere or nowhere.
 *
 * MAMORI_FAULT_POINTS="pool-desktop-done:3" kills the process the 3rd time that point is
 * passed. Unset (as it always is outside tests), a point costs a map lookup. Every job step is
 * a point of its own, `job:KIND:STEP`, passed when the step's work is done and before the
 * journal records it (jobs/job-journal.ts).
 */
const armed = parse(process.env['MAMORI_FAULT_POINTS'] ?? '');
const hits = new Map<string, number>();

function parse(spec: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    // Names have colons of their own (job:KIND:STEP): only a number after the last one is a count.
    const colon = part.lastIndexOf(':');
    const counted = colon > 0 && /^\d+$/.test(part.slice(colon + 1));
    const name = counted ? part.slice(0, colon) : part;
    const n = counted ? Number(part.slice(colon + 1)) : 1;
    if (name && Number.isInteger(n) && n > 0) m.set(name, n);
  }
  return m;
}

export function faultPoint(name: string): void {
  const at = armed.get(name);
  if (at === undefined) return;
  const n = (hits.get(name) ?? 0) + 1;
  hits.set(name, n);
  if (n === at) process.kill(process.pid, 'SIGKILL');
}

import type { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import type { PoolSpec } from '../store/repos/pool-records.js';

/** A desktop is in use when a user is assigned to it or has a session on it; powered on or not is no part of it. */
export function isInUse(d: { assignedUser: string | null; sessionUser: string | null }): boolean {
  return d.assignedUser !== null || d.sessionUser !== null;
}

const OFF = ['stopped', 'crashed'];

/**
 * View Composer's spare desktops: a pool keeps `spare` desktops powered on that are not in
 * use, so the next user gets one that has booted and customized already. When too few are on,
 * the lowest-numbered free desktops that are stopped start; when too many are (a session
 * ended, a user was unassigned), the highest-numbered free ones that run are powered off, so
 * a pool holds its target and no more. Desktops an operation still has to do (pending) are
 * left to it. A desktop in use is never touched. `spare` 0 leaves power to the operator: a
 * pool without spares neither starts nor stops desktops by itself.
 */
export async function keepSpares(
  desktops: Pick<PoolDesktopRepo, 'powerStates'>,
  power: { start: (vm: string) => Promise<unknown>; stop: (vm: string) => Promise<unknown> },
  pool: string,
  spec: PoolSpec,
): Promise<{ started: string[]; stopped: string[] }> {
  const out = { started: [] as string[], stopped: [] as string[] };
  if (spec.spare === 0) return out;
  const rows = await desktops.powerStates(pool);
  const free = rows.filter((r) => !isInUse(r));
  const on = free.filter((r) => !OFF.includes(r.state));
  let missing = spec.spare - on.length;
  for (const r of free) {
    if (missing <= 0) break;
    if (!OFF.includes(r.state) || r.pending !== null) continue;
    await power.start(r.name);
    out.started.push(r.name);
    missing--;
  }
  // Only desktops that finished booting go: one still starting may be the spare just handed out.
  for (const r of [...on].reverse()) {
    if (missing >= 0) break;
    if (r.state !== 'running' || r.pending !== null) continue;
    await power.stop(r.name);
    out.stopped.push(r.name);
    missing++;
  }
  return out;
}

const USER = /^[A-Za-z0-9][A-Za-z0-9._@\\-]{0,127}$/;

/** A user as a directory names one: `alice`, `alice@corp.example`, `CORP\alice`. */
export function isUserName(user: unknown): user is string {
  return typeof user === 'string' && USER.test(user);
}

import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { PoolSpec } from './pool-spec.js';

/**
 * View Composer's spare desktops: a pool keeps `spare` desktops powered on that no user is
 * assigned to, so the next user gets one that has booted and customized already. The
 * lowest-numbered free desktops that are stopped start first; desktops an operation still
 * has to do (pending) wait for it. Excess spares are left running: powering off a desktop
 * someone may have just reached is the power policy's call, not this one's.
 * Returns the desktops it started.
 */
export async function keepSpares(db: Kysely<Database>, start: (vm: string) => Promise<unknown>, pool: string, spec: PoolSpec): Promise<string[]> {
  if (spec.spare === 0) return [];
  const rows = await db.selectFrom('pool_desktops').innerJoin('vms', 'vms.id', 'pool_desktops.vm_id')
    .select(['vms.name', 'vms.state', 'pool_desktops.assigned_user', 'pool_desktops.pending']).where('pool_desktops.pool', '=', pool).orderBy('number').execute();
  const free = rows.filter((r) => r.assigned_user === null);
  let missing = spec.spare - free.filter((r) => !['stopped', 'crashed'].includes(r.state)).length;
  const started: string[] = [];
  for (const r of free) {
    if (missing <= 0) break;
    if (!['stopped', 'crashed'].includes(r.state) || r.pending !== null) continue;
    await start(r.name);
    started.push(r.name);
    missing--;
  }
  return started;
}

const USER = /^[A-Za-z0-9][A-Za-z0-9._@\\-]{0,127}$/;

/** A user as a directory names one: `alice`, `alice@corp.example`, `CORP\alice`. */
export function isUserName(user: unknown): user is string {
  return typeof user === 'string' && USER.test(user);
}

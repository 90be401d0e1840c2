import type { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import { MamoriError } from '../core/mamori-error.js';

/** A pool's desktops by name (all of them without names); a name the pool lacks is refused, not skipped. */
export async function desktopsNamed(
  desktops: Pick<PoolDesktopRepo, 'desktopsOf'>,
  pool: string,
  names: string[] | undefined,
): Promise<{ vmId: string; replicaId: string; number: number; name: string }[]> {
  const rows = await desktops.desktopsOf(pool);
  if (!names || names.length === 0) return rows;
  const unknown = names.filter((n) => !rows.some((r) => r.name === n));
  if (unknown.length > 0)
    throw new MamoriError('VM_NOT_FOUND', `desktop pool ${pool} has no desktop ${unknown.join(', ')}`);
  return rows.filter((r) => names.includes(r.name));
}

import { isAbsolute, relative, resolve, sep } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';

/**
 * Resolves a disk path given relative to (or absolute inside) a storage pool folder and
 * refuses anything that lands outside it, including through "..". Image-backed disks live
 * only in pools; host devices are attached as RDM instead.
 */
export function resolveInPool(poolDir: string, given: string): string {
  if (typeof given !== 'string' || given.length === 0 || given.includes('\0')) {
    throw new MamoriError('INVALID_INPUT', 'disk path is empty or not a string');
  }
  const root = resolve(poolDir);
  if (given.split(/[\\/]/).includes('..')) {
    throw new MamoriError(
      'PATH_OUTSIDE_POOL',
      `disk path ${JSON.stringify(given)} uses "..": give a path inside the storage pool ${root}`,
      { details: { path: given, pool: root } },
    );
  }
  const full = isAbsolute(given) ? resolve(given) : resolve(root, given);
  const rel = relative(root, full);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || !full.startsWith(root + sep)) {
    throw new MamoriError(
      'PATH_OUTSIDE_POOL',
      `disk path ${JSON.stringify(given)} is outside the storage pool ${root}: image disks live in a pool; attach host devices with 'mamori disk create NAME --rdm DEVICE'`,
      { details: { path: given, pool: root } },
    );
  }
  return full;
}

/** Folders of a pool that mamori names by ids (overlays, recovered VMs, desktops, replicas): no user path enters them. */
export const RESERVED_POOL_FOLDERS = ['.layers', 'recovered', 'desktops', 'replicas'] as const;

/** A disk path an admin chose: inside the pool, and neither hidden nor in a folder mamori owns. */
export function assertUserPoolPath(poolDir: string, full: string): void {
  const parts = relative(resolve(poolDir), full).split(sep);
  if (parts.some((p) => p.startsWith('.')) || (RESERVED_POOL_FOLDERS as readonly string[]).includes(parts[0] ?? '')) {
    throw new MamoriError(
      'PATH_OUTSIDE_POOL',
      `disk path ${JSON.stringify(relative(resolve(poolDir), full))} is in a hidden folder or one mamori names by ids (${RESERVED_POOL_FOLDERS.join(', ')}); choose another path in the pool`,
    );
  }
}

import { MamoriError } from '../core/mamori-error.js';

/**
 * The two ways an ext read fails, shared by every ext4-* module so the wording stays the same:
 * a structure that contradicts itself (the person should check the filesystem) and a limit or
 * unsupported feature (nothing is wrong with the disk).
 */

export function damaged(message: string): MamoriError {
  return new MamoriError(
    'FILESYSTEM_UNREADABLE',
    `${message}; the ext filesystem looks damaged (check it with e2fsck -n on a copy of the disk)`,
  );
}

export function unreadable(message: string): MamoriError {
  return new MamoriError('FILESYSTEM_UNREADABLE', message);
}

import { MamoriError } from '../core/mamori-error.js';

/** Every NTFS damage message ends with the same advice, so it lives with the one function that raises them. */
const HINT = 'the NTFS metadata looks damaged; run chkdsk (or ntfsfix) on a copy of the disk, never on the source';

/** `offset` is where on the partition the bad structure lies; negative or absent when unknown. */
export function unreadable(message: string, offset?: number): never {
  const known = offset !== undefined && offset >= 0;
  const where = known ? ` (byte ${offset} of the partition)` : '';
  throw new MamoriError(
    'FILESYSTEM_UNREADABLE',
    `NTFS: ${message}${where}; ${HINT}`,
    known ? { details: { offset } } : {},
  );
}

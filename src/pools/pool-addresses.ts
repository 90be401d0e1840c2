import type { DesktopPoolRepo } from '../store/repos/desktop-pool-repo.js';
import type { PoolNetwork } from '../store/repos/pool-records.js';
import { MamoriError } from '../core/mamori-error.js';
import { addressAt, rangeSize } from './pool-network.js';

/**
 * Static addresses held by desktops, one row each with the address as the key: two desktops
 * never hold one address, whichever pools share a range and whatever provisions at once. A
 * desktop's address is reserved before its identity seed is written (the seed carries it),
 * in one transaction with the look-up of the addresses held, and freed with the desktop.
 */
export async function reserveAddresses(
  pools: DesktopPoolRepo,
  pool: string,
  net: PoolNetwork | undefined,
  vmIds: string[],
): Promise<Map<string, string>> {
  if (!net || net.mode !== 'static' || vmIds.length === 0) return new Map();
  // Chosen inside the repository's transaction, from the addresses held as it reads them.
  return pools.reserveAddresses(
    pool,
    (held) => {
      const out = new Map<string, string>();
      const n = rangeSize(net);
      let i = 0;
      for (const vmId of vmIds) {
        while (i < n && held.has(addressAt(net, i))) i++;
        if (i >= n) {
          throw new MamoriError(
            'POOL_ADDRESSES_EXHAUSTED',
            `desktop pool ${pool}: every address of ${net.first}-${net.last} is held by a desktop; widen the range, or shrink a pool that shares it`,
            { details: { pool, first: net.first, last: net.last } },
          );
        }
        out.set(vmId, addressAt(net, i++));
      }
      return out;
    },
    new Date().toISOString(),
  );
}

import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { MamoriError } from '../core/mamori-error.js';
import { addressAt, rangeSize, type PoolNetwork } from './pool-network.js';

/**
 * Static addresses held by desktops, one row each with the address as the key: two desktops
 * never hold one address, whichever pools share a range and whatever provisions at once. A
 * desktop's address is reserved before its identity seed is written (the seed carries it),
 * in one transaction with the look-up of the addresses held, and freed with the desktop.
 */
export async function reserveAddresses(db: Kysely<Database>, pool: string, net: PoolNetwork | undefined, vmIds: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (!net || net.mode !== 'static' || vmIds.length === 0) return out;
  await db.transaction().execute(async (tx) => {
    const held = new Set((await tx.selectFrom('pool_addresses').select('address').execute()).map((r) => r.address));
    const now = new Date().toISOString();
    const n = rangeSize(net);
    let i = 0;
    for (const vmId of vmIds) {
      while (i < n && held.has(addressAt(net, i))) i++;
      if (i >= n) {
        throw new MamoriError('POOL_ADDRESSES_EXHAUSTED', `desktop pool ${pool}: every address of ${net.first}-${net.last} is held by a desktop; widen the range, or shrink a pool that shares it`, { details: { pool, first: net.first, last: net.last } });
      }
      const address = addressAt(net, i++);
      // The primary key refuses an address another transaction took: never two holders.
      await tx.insertInto('pool_addresses').values({ address, pool, vm_id: vmId, reserved_at: now }).execute();
      out.set(vmId, address);
    }
  });
  return out;
}

/** Frees the addresses of these desktops (deleted, or never made). */
export async function freeAddresses(db: Kysely<Database>, vmIds: string[]): Promise<void> {
  if (vmIds.length > 0) await db.deleteFrom('pool_addresses').where('vm_id', 'in', vmIds).execute();
}

/** Reservations of the pool whose desktop has no row: what a provisioning cut before its rows left. */
export async function freeStrayAddresses(db: Kysely<Database>, pool: string): Promise<void> {
  await db.deleteFrom('pool_addresses').where('pool', '=', pool)
    .where('vm_id', 'not in', db.selectFrom('pool_desktops').select('vm_id').where('pool', '=', pool)).execute();
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DesktopPoolRepo } from '../../../src/store/repos/desktop-pool-repo.js';
import type { Store } from '../../../src/store/store.js';
import { describeEachDialect } from '../../harness/store-dialects.js';

/*
 * Two provisionings reserving static addresses from one range at once. Each reads what is held,
 * takes the first free address and writes it. On SQLite one writer at a time orders them; on
 * PostgreSQL two servers share one database, and without the lock in reserveAddresses both would
 * read the same free address and the second insert would fail on the primary key.
 */
const RANGE = Array.from({ length: 40 }, (_, i) => `10.9.0.${i + 10}`);

async function addPool(store: Store, name: string): Promise<void> {
  const at = new Date().toISOString();
  await store.db
    .insertInto('desktop_pools')
    .values({ name, spec: '{}', state: 'ready', message: null, created_at: at, updated_at: at, operation: null })
    .execute();
}

/** The first free address of the range, for one desktop. */
function firstFree(vmId: string): (held: ReadonlySet<string>) => Map<string, string> {
  return (held) => {
    const free = RANGE.find((a) => !held.has(a));
    if (free === undefined) throw new Error('the range is full');
    return new Map([[vmId, free]]);
  };
}

describeEachDialect('pool addresses', (f) => {
  test('reservations racing from two servers each get their own address, none fails', async () => {
    const first = await f.open();
    // SQLite: a second server is a second process; two connections in one thread would block the
    // event loop on each other's lock (as in repos.test.ts). One store still races its transactions.
    const second = f.dialect === 'postgres' ? await f.reopen() : first;
    await addPool(first, 'a');
    await addPool(first, 'b');
    const repos = [new DesktopPoolRepo(first.handle), new DesktopPoolRepo(second.handle)];
    const n = 30;
    const at = new Date().toISOString();
    const results = await Promise.allSettled(
      Array.from({ length: n }, (_, i) => repos[i % 2]!.reserveAddresses(i % 2 ? 'b' : 'a', firstFree(`vm-${i}`), at)),
    );
    const failed = results.filter((r) => r.status === 'rejected');
    assert.deepEqual(failed, [], 'no reservation failed');
    const held = [...(await repos[0]!.addressesOf('a')).values(), ...(await repos[1]!.addressesOf('b')).values()];
    assert.equal(held.length, n);
    assert.equal(new Set(held).size, n, 'no address held twice');
    assert.deepEqual([...held].sort(), [...RANGE.slice(0, n)].sort(), 'the first n addresses, in some order');
  });
});

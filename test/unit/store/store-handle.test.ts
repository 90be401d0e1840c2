import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { storeHandle, unwrapStoreHandle, type StoreHandle } from '../../../src/store/store-handle.js';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';

test('a store handle carries nothing a service could query through, and unwraps only to its own database', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-handle-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const handle = store.handle;
    // Opaque: no own keys, no prototype methods, frozen.
    assert.deepEqual(Reflect.ownKeys(handle), []);
    assert.ok(Object.isFrozen(handle));
    assert.equal(storeHandle(store.db), handle, 'one database, one handle');
    assert.equal(unwrapStoreHandle(handle), store.db);
    // A repository built from the handle reads the same database.
    assert.deepEqual(await new VmRepo(handle).list(), []);
    // Something that only looks like a handle (a cast, a copy) is refused, not misread.
    assert.throws(() => unwrapStoreHandle({} as StoreHandle), TypeError);
    assert.throws(() => new VmRepo({ ...handle }), TypeError);
    assert.throws(() => new VmRepo(store.db as unknown as StoreHandle), TypeError);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { ProtectionGroups } from '../../../src/plans/protection-groups.js';

test('protection groups: replicated VMs only, one site per group, a VM in at most one group', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-groups-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const now = new Date().toISOString();
    const vm = async (name: string, peer: string | null): Promise<void> => {
      await store.db
        .insertInto('vms')
        .values({
          id: `id-${name}`,
          name,
          definition: '{}',
          state: 'stopped',
          state_reason: null,
          pid: null,
          last_heartbeat_at: null,
          created_at: now,
          updated_at: now,
        })
        .execute();
      if (peer) {
        await store.db
          .insertInto('replications')
          .values({
            vm_id: `id-${name}`,
            peer,
            replica_id: `rep-${name}`,
            rpo_ms: 30_000,
            keep_points: 24,
            state: 'enabled',
            generation: null,
            last_point_at: null,
            last_point_id: null,
            failures: 0,
            last_error: null,
            stats: '[]',
            created_at: now,
            updated_at: now,
          })
          .execute();
      }
    };
    await vm('db1', 'site-b');
    await vm('app1', 'site-b');
    await vm('web1', 'site-b');
    await vm('far', 'site-c');
    await vm('plain', null);
    const groups = new ProtectionGroups(store.handle);
    const code = async (p: Promise<unknown>, c: string) =>
      assert.rejects(p, (e) => isMamoriError(e, c as never) || assert.fail(`${String(e)} is not ${c}`));

    const shop = await groups.create('shop', ['db1', 'app1']);
    assert.deepEqual([shop.name, shop.peer, shop.vms], ['shop', 'site-b', ['app1', 'db1']]);
    await code(groups.create('shop', ['web1']), 'GROUP_EXISTS');
    await code(groups.create('other', ['db1']), 'VM_ALREADY_PROTECTED');
    await code(groups.create('other', ['plain']), 'INVALID_INPUT');
    await code(groups.create('other', ['ghost']), 'VM_NOT_FOUND');
    await code(groups.create('other', ['web1', 'far']), 'INVALID_INPUT');
    await code(groups.create('other', []), 'INVALID_INPUT');
    await code(groups.create('../x', ['web1']), 'INVALID_NAME');
    assert.deepEqual(
      (await groups.list()).map((g) => g.name),
      ['shop'],
      'refused creates left nothing behind',
    );

    await code(groups.add('shop', 'far'), 'INVALID_INPUT');
    assert.deepEqual((await groups.add('shop', 'web1')).vms, ['app1', 'db1', 'web1']);
    assert.deepEqual(
      (await groups.add('shop', 'web1')).vms,
      ['app1', 'db1', 'web1'],
      'adding a member again changes nothing',
    );
    assert.deepEqual((await groups.remove('shop', 'app1')).vms, ['db1', 'web1']);
    await code(groups.remove('shop', 'app1'), 'NOT_FOUND');
    await code(groups.get('nope'), 'GROUP_NOT_FOUND');

    // Deleting the VM drops its membership; deleting the group frees its VMs.
    await store.db.deleteFrom('vms').where('name', '=', 'web1').execute();
    assert.deepEqual((await groups.get('shop')).vms, ['db1']);
    await code(groups.remove('shop', 'db1'), 'INVALID_INPUT');
    await groups.delete('shop');
    assert.deepEqual((await groups.create('again', ['db1', 'app1'])).vms, ['app1', 'db1']);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

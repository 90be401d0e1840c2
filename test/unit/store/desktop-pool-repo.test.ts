import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore, type SqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { DesktopPoolRepo } from '../../../src/store/repos/desktop-pool-repo.js';
import { PoolDesktopRepo } from '../../../src/store/repos/pool-desktop-repo.js';
import type { PoolSpec } from '../../../src/store/repos/pool-records.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

async function withStore(fn: (store: SqliteStore) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-pool-repo-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    await fn(store);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const spec: PoolSpec = {
  master: { vmId: 'vm-master', name: 'master' },
  snapshot: 'v1',
  size: 3,
  spare: 0,
  namePattern: 'd-{n}',
  persistentDiskBytes: null,
  disposableDiskBytes: 1024 ** 3,
  storage: ['default'],
  commands: [],
  licenseCommand: null,
  kmsHost: null,
  guestOs: 'linux',
  licenseTimeoutSec: 60,
  skipLicenseActivation: false,
  concurrency: 8,
  maintenanceConcurrency: 12,
  network: { mode: 'static', first: '10.0.5.10', last: '10.0.5.12', prefix: 24, gateway: null, dns: [] },
};

test('a pool row keeps the JSON text it always had and reads back decoded; a malformed one is STORE_ROW_INVALID', async () => {
  await withStore(async (store) => {
    const pools = new DesktopPoolRepo(store.handle);
    await pools.insert({
      name: 'p',
      spec,
      state: 'provisioning',
      operation: { kind: 'provision' },
      at: '2026-01-01T00:00:00.000Z',
    });
    const raw = await store.db
      .selectFrom('desktop_pools')
      .selectAll()
      .where('name', '=', 'p')
      .executeTakeFirstOrThrow();
    assert.equal(raw.spec, JSON.stringify(spec), 'the on-disk format is unchanged');
    assert.equal(raw.operation, JSON.stringify({ kind: 'provision' }));
    const p = await pools.find('p');
    assert.deepEqual(p?.spec, spec);
    assert.deepEqual(p?.operation, { kind: 'provision' });
    // A pool from before guestOs and network existed still reads.
    const { guestOs: _g, network: _n, ...old } = spec;
    await store.db
      .updateTable('desktop_pools')
      .set({ spec: JSON.stringify(old), operation: null })
      .where('name', '=', 'p')
      .execute();
    assert.deepEqual((await pools.find('p'))?.spec, old);
    await store.db
      .updateTable('desktop_pools')
      .set({ spec: JSON.stringify({ ...spec, size: 'three' }) })
      .where('name', '=', 'p')
      .execute();
    await assert.rejects(
      pools.find('p'),
      (e: unknown) => isMamoriError(e) && e.code === 'STORE_ROW_INVALID' && /desktop_pools\.spec/.test(e.message),
    );
  });
});

test("an operation's record and its desktops' pending marks are written together", async () => {
  await withStore(async (store) => {
    const pools = new DesktopPoolRepo(store.handle);
    const desktops = new PoolDesktopRepo(store.handle);
    await pools.insert({
      name: 'p',
      spec,
      state: 'provisioning',
      operation: { kind: 'provision' },
      at: '2026-01-01T00:00:00.000Z',
    });
    await pools.insertReplica({
      id: 'r1',
      pool: 'p',
      storage: 'default',
      snapshot: 'v1',
      files: ['/x/disk0.qcow2'],
      sizeBytes: 10,
      createdAt: '2026-01-01T00:00:00.000Z',
    });
    await desktops.add(
      'p',
      [1, 2, 3].map((n) => ({
        vm: { id: `vm-${n}`, definition: { name: `d-${n}` } },
        disks: [],
        number: n,
        replicaId: 'r1',
      })),
      '2026-01-01T00:00:00.000Z',
    );
    assert.deepEqual(
      (await desktops.desktopsOf('p')).map((d) => d.name),
      ['d-1', 'd-2', 'd-3'],
    );
    await pools.startOperation('p', {
      state: 'refreshing',
      operation: { kind: 'refresh', force: false },
      pending: ['vm-1', 'vm-3'],
      at: '2026-01-02T00:00:00.000Z',
    });
    assert.deepEqual(
      (await desktops.pendingFor('p', 'refresh')).map((d) => d.vmId),
      ['vm-1', 'vm-3'],
    );
    assert.deepEqual(
      (await pools.notFailed()).map((p) => p.operation),
      [{ kind: 'refresh', force: false }],
    );
    // A second operation clears the first's marks.
    await pools.startOperation('p', {
      state: 'recomposing',
      operation: { kind: 'recompose', snapshot: 'v2', force: true },
      pending: ['vm-2'],
      at: '2026-01-03T00:00:00.000Z',
    });
    assert.deepEqual(
      (await desktops.pendingFor('p', 'refresh')).map((d) => d.vmId),
      [],
    );
    assert.deepEqual(
      (await desktops.pendingFor('p', 'recompose')).map((d) => d.vmId),
      ['vm-2'],
    );
    assert.deepEqual(await desktops.notOnSnapshot('p', 'v2'), ['vm-1', 'vm-2', 'vm-3']);
    assert.deepEqual((await desktops.context('vm-2'))?.files, ['/x/disk0.qcow2']);
    // A desktop whose VM row is gone (a cut delete) is still one shrinking removes.
    await store.db
      .deleteFrom('vms')
      .where('id', '=', 'vm-3')
      .execute()
      .catch(() => undefined);
    assert.ok((await desktops.vmIdsAbove('p', 1)).includes('vm-2'));
  });
});

test('addresses: a choice that throws reserves none; two reservations never share an address; strays are freed', async () => {
  await withStore(async (store) => {
    const pools = new DesktopPoolRepo(store.handle);
    await pools.insert({
      name: 'p',
      spec,
      state: 'provisioning',
      operation: { kind: 'provision' },
      at: '2026-01-01T00:00:00.000Z',
    });
    await assert.rejects(
      pools.reserveAddresses(
        'p',
        () => {
          throw new Error('exhausted');
        },
        'now',
      ),
      /exhausted/,
    );
    assert.equal((await pools.addressesOf('p')).size, 0);
    await pools.reserveAddresses('p', () => new Map([['vm-1', '10.0.5.10']]), 'now');
    await assert.rejects(
      pools.reserveAddresses(
        'p',
        () =>
          new Map([
            ['vm-2', '10.0.5.11'],
            ['vm-3', '10.0.5.10'],
          ]),
        'now',
      ),
    );
    assert.deepEqual(
      [...(await pools.addressesOf('p'))],
      [['vm-1', '10.0.5.10']],
      'the failed reservation left nothing',
    );
    const seen: string[][] = [];
    await pools.reserveAddresses(
      'p',
      (held) => {
        seen.push([...held]);
        return new Map([['vm-2', '10.0.5.11']]);
      },
      'now',
    );
    assert.deepEqual(seen, [['10.0.5.10']]);
    await pools.freeStrayAddresses('p');
    assert.equal((await pools.addressesOf('p')).size, 0, 'no desktop row holds them');
  });
});

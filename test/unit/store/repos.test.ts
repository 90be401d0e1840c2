import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SecretBox } from '../../../src/core/secret-box.js';
import { MamoriError } from '../../../src/core/mamori-error.js';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';
import { DiskRepo } from '../../../src/store/repos/disk-repo.js';
import { TokenRepo } from '../../../src/store/repos/token-repo.js';
import { PeerRepo } from '../../../src/store/repos/peer-repo.js';
import { AuditRepo } from '../../../src/store/repos/audit-repo.js';
import { holdsSealedValues } from '../../../src/store/sealed-values.js';
import { AuditLog, type AuditRecord } from '../../../src/audit/audit-log.js';
import type { DiskRecord } from '../../../src/disks/disk-record.js';
import type { Store } from '../../../src/store/store.js';
import { describeEachDialect } from '../../harness/store-dialects.js';

const box = new SecretBox(randomBytes(32));

/** A whole VM definition: VmRepo validates what it reads back. */
function definitionOf(id: string, name: string): Record<string, unknown> {
  return {
    id,
    name,
    vcpus: 1,
    memoryMiB: 256,
    firmware: 'bios',
    machineType: 'pc-q35-7.2',
    diskIds: [],
    nics: [],
    boot: { kind: 'disk' },
    stopTimeoutSec: 10,
  };
}

async function addVm(store: Store, id: string, name: string): Promise<void> {
  const at = new Date().toISOString();
  await store.db
    .insertInto('vms')
    .values({
      id,
      name,
      definition: JSON.stringify(definitionOf(id, name)),
      state: 'stopped',
      state_reason: null,
      pid: null,
      last_heartbeat_at: null,
      created_at: at,
      updated_at: at,
    })
    .execute();
}

function disk(id: string, name: string, over: Partial<DiskRecord> = {}): DiskRecord {
  return {
    id,
    name,
    pool: 'default',
    kind: 'image',
    format: 'qcow2',
    path: `/pool/${name}.qcow2`,
    sizeBytes: 10 * 2 ** 30,
    rdmMode: null,
    shared: false,
    vmId: null,
    ownedByVm: false,
    createdAt: new Date().toISOString(),
    overlays: [],
    ...over,
  };
}

function record(i: number): AuditRecord {
  return {
    at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    tokenId: null,
    role: null,
    source: '127.0.0.1',
    method: 'POST',
    route: '/vms',
    target: { name: `vm-${i}` },
    status: 201,
    errorCode: null,
    requestId: `r${i}`,
  };
}

describeEachDialect('repositories', (f) => {
  test('vms: listed by name (bytewise, as SQLite sorts), state and heartbeat written back', async () => {
    const store = await f.open();
    for (const [id, name] of [
      ['v1', 'web'],
      ['v2', 'DB'],
      ['v3', 'app-2'],
      ['v4', 'app_1'],
    ] as const)
      await addVm(store, id, name);
    const vms = new VmRepo(store.handle);
    assert.deepEqual(
      (await vms.list()).map((v) => v.name),
      ['DB', 'app-2', 'app_1', 'web'],
    );
    await vms.setState('v1', 'running', { pid: 4_000_000, reason: null });
    await vms.setHeartbeat('v1', '2026-01-01T00:00:00.000Z');
    const web = await vms.findById('v1');
    assert.deepEqual(
      [web?.state, web?.pid, web?.lastHeartbeatAt, web?.definition],
      ['running', 4_000_000, '2026-01-01T00:00:00.000Z', definitionOf(web!.id, 'web')],
    );
    assert.equal(await vms.findByName('nope'), undefined);
  });

  test('disks: round trip of every field; a taken name is DISK_EXISTS; one of two deletes wins', async () => {
    const store = await f.open();
    await addVm(store, 'v1', 'web');
    const disks = new DiskRepo(store.handle);
    const d = disk('d1', 'web-0', {
      vmId: 'v1',
      ownedByVm: true,
      shared: true,
      sizeBytes: 3 * 2 ** 40 + 7,
      overlays: ['/pool/a.qcow2'],
    });
    await disks.insert(d);
    assert.deepEqual(await disks.findByName('web-0'), d);
    assert.deepEqual(await disks.forVm('v1'), [d]);
    assert.deepEqual(await disks.byIds(['d1', 'nope']), [d]);
    assert.deepEqual(await disks.findByPath(d.path), d);
    await assert.rejects(
      disks.insert(disk('d2', 'web-0')),
      (e: unknown) => e instanceof MamoriError && e.code === 'DISK_EXISTS',
    );
    const [a, b] = await Promise.all([disks.delete('d1'), disks.delete('d1')]);
    assert.deepEqual([a, b].sort(), [false, true]);
  });

  test('tokens: made, verified, listed, revoked; an admin token keeps its pairing key sealed', async () => {
    const store = await f.open();
    const tokens = new TokenRepo(store.handle, box);
    assert.equal(await holdsSealedValues(store.handle), false);
    const admin = await tokens.createWithId('admin', 'admin');
    const viewer = await tokens.createWithId('ro', 'viewer', { expiresAt: '2000-01-01T00:00:00.000Z' });
    assert.equal(await tokens.hasAdmin(), true);
    assert.equal(await holdsSealedValues(store.handle), true);
    assert.deepEqual(await tokens.verify(admin.token), { id: admin.id, name: 'admin', role: 'admin' });
    assert.equal(await tokens.verify(viewer.token), undefined, 'expired');
    assert.equal(await tokens.verify('mamori_nope'), undefined);
    assert.ok((await tokens.get(admin.id))?.lastUsedAt, 'last use recorded');
    assert.equal((await tokens.pairingKeys()).length, 1);
    assert.equal(await tokens.liveAdminCount(), 1);
    await tokens.revoke(viewer.id);
    assert.deepEqual(
      (await tokens.list()).map((t) => t.id),
      [admin.id],
    );
  });

  test('peers: saved again replaces the row; found by fingerprint and inbound token; the token sealed at rest', async () => {
    const store = await f.open();
    const tokens = new TokenRepo(store.handle, box);
    const inbound = await tokens.createWithId('peer b', 'site');
    const peers = new PeerRepo(store.handle, box);
    const p = {
      id: 'p1',
      name: 'site-b',
      url: null,
      caCertPem: 'PEM',
      caFingerprint: 'ab:cd',
      token: null,
      inboundTokenId: inbound.id,
      createdAt: 't0',
      updatedAt: 't0',
    };
    await peers.save(p);
    await peers.save({ ...p, url: 'https://b:8443', token: 'mamori_secret', updatedAt: 't1' });
    const noLink = { bitsPerSecond: null, schedule: null, concurrency: null };
    assert.deepEqual(await peers.list(), [
      { ...p, url: 'https://b:8443', token: 'mamori_secret', updatedAt: 't1', link: noLink },
    ]);
    // The link's budget is set apart from save(): pairing again keeps it.
    const link = { bitsPerSecond: 50_000_000, schedule: 'Mon-Fri 08:00-18:00', concurrency: 2 };
    assert.equal(await peers.setLink('site-b', link), true);
    assert.equal(await peers.setLink('site-z', link), false);
    await peers.save({ ...p, url: 'https://b:8443', token: 'mamori_secret', updatedAt: 't2' });
    assert.deepEqual((await peers.findByName('site-b'))?.link, link);
    assert.equal((await peers.findByFingerprint('ab:cd'))?.name, 'site-b');
    assert.equal((await peers.findByInboundToken(inbound.id))?.name, 'site-b');
    const raw = await store.db.selectFrom('peers').select('token').executeTakeFirstOrThrow();
    assert.ok(raw.token?.startsWith('sb1:'), 'sealed');
    await tokens.revoke(inbound.id);
    assert.equal((await peers.findByName('site-b'))?.inboundTokenId, null, 'ON DELETE SET NULL');
    await peers.delete('p1');
    assert.deepEqual(await peers.list(), []);
  });

  test('audit log: two servers on one database appending at once make one unbroken chain', async () => {
    const first = await f.open();
    // SQLite: a second server is a second process (test/unit/audit/audit-log.test.ts runs one in a
    // worker): two connections in one thread would wait on each other's lock with the event loop blocked.
    const second = f.dialect === 'postgres' ? await f.reopen() : first;
    const logs = [new AuditLog(new AuditRepo(first.handle)), new AuditLog(new AuditRepo(second.handle))];
    const n = 40;
    await Promise.all(Array.from({ length: n }, (_, i) => logs[i % 2]!.append(record(i))));
    const verification = await logs[0]!.verify();
    assert.equal(verification.ok, true, JSON.stringify(verification));
    const all = await new AuditRepo(first.handle).page(-1, 1000);
    const base = all[0]?.seq ?? 0;
    assert.deepEqual(
      all.map((e) => e.seq),
      Array.from({ length: n }, (_, i) => base + i),
      'no gap, no duplicate',
    );
    assert.deepEqual((await new AuditRepo(second.handle).head())?.seq, base + n - 1);
    const newest = await new AuditRepo(second.handle).list({ limit: 2 });
    assert.deepEqual(
      newest.map((e) => e.seq),
      [base + n - 1, base + n - 2],
    );
  });
});

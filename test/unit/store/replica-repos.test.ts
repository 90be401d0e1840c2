import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { ReplicationRepo } from '../../../src/store/repos/replication-repo.js';
import { ReplicaRepo } from '../../../src/store/repos/replica-repo.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

test('replication and replica repos: stats, disks and disk points go through their codecs; a replica goes in one transaction', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-reprepo-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const now = '2026-01-01T00:00:00.000Z';
    await store.db
      .insertInto('vms')
      .values({
        id: 'v1',
        name: 'one',
        definition: '{}',
        state: 'stopped',
        state_reason: null,
        pid: null,
        last_heartbeat_at: null,
        created_at: now,
        updated_at: now,
      })
      .execute();
    const reps = new ReplicationRepo(store.handle);
    await reps.insert({
      vmId: 'v1',
      peer: 'b',
      replicaId: 'r1',
      rpoMs: 30_000,
      keepPoints: 3,
      state: 'enabled',
      generation: null,
      bandwidthBps: null,
      continuous: null,
      createdAt: now,
      updatedAt: now,
    });
    // The on-disk text stays what it was: '[]' for no cycle yet.
    assert.equal((await store.db.selectFrom('replications').select('stats').executeTakeFirstOrThrow()).stats, '[]');
    const stats = [
      {
        at: now,
        mode: 'full' as const,
        bytesSent: 10,
        bytesChanged: 10,
        durationMs: 5,
        throughputBps: 2000,
        replica: { points: 1, chainLength: 2, bytes: 3, seedBytes: 0 },
      },
    ];
    await reps.recordPoint('v1', { generation: 1, pointId: 'p1', pointAt: now, stats });
    const r = await reps.find('v1');
    assert.deepEqual([r?.generation, r?.lastPointId, r?.stats, r?.failures], [1, 'p1', stats, 0]);
    assert.deepEqual(
      (await reps.listWithVmNames()).map((x) => x.vmName),
      ['one'],
    );
    await store.db.updateTable('replications').set({ stats: '[{"at":1}]' }).execute();
    await assert.rejects(reps.find('v1'), (e) => isMamoriError(e, 'STORE_ROW_INVALID'));

    const replicas = new ReplicaRepo(store.handle);
    await replicas.insert({
      id: 'r1',
      sourceSite: 'a',
      sourceVmId: 'v1',
      vmName: 'one',
      disks: [{ index: 0, sizeBytes: 1024 }],
      keepPoints: 2,
      createdAt: now,
    });
    for (const [i, t] of ['01', '02', '03'].entries()) {
      await replicas.addPoint('r1', {
        pointId: `p${i}`,
        time: `2026-01-01T00:00:${t}.000Z`,
        consistency: 'crash',
        committedAt: now,
        diskPoints: [`p${i}`],
      });
    }
    await replicas.keepNewestPoints('r1', 2);
    assert.deepEqual(
      (await replicas.get('r1'))?.points.map((p) => p.id),
      ['p1', 'p2'],
    );
    assert.deepEqual(await replicas.diskPointsOf('r1', 'p2'), ['p2']);
    assert.equal(await replicas.findIdBySource('a', 'v1'), 'r1');
    await store.db
      .insertInto('replica_holds')
      .values({ replica_id: 'r1', holder: 'vm:v1', point_id: 'p1', created_at: now })
      .execute();
    assert.equal(await replicas.isHeld('r1'), true);
    await replicas.deleteRows('r1');
    assert.equal(await replicas.get('r1'), undefined);
    assert.equal(await replicas.isHeld('r1'), false);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

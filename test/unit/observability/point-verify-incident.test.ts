import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';
import { ReplicationService, POINT_VERIFY_FAILED } from '../../../src/replication/replication-service.js';

type Deps = ConstructorParameters<typeof ReplicationService>[0];

test('a verify that finds gaps opens replication.point-verify-failed for the VM; a later consistent verify clears it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-verify-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const now = new Date().toISOString();
    await store.db
      .insertInto('vms')
      .values({
        id: 'vm-1',
        name: 'pg',
        definition: '{}',
        state: 'stopped',
        state_reason: null,
        pid: null,
        last_heartbeat_at: null,
        created_at: now,
        updated_at: now,
      })
      .execute();
    await store.db
      .insertInto('replications')
      .values({
        vm_id: 'vm-1',
        peer: 'site-b',
        replica_id: 'rep-1',
        rpo_ms: 30_000,
        keep_points: 3,
        state: 'enabled',
        generation: 1,
        last_point_at: now,
        last_point_id: 'p2',
        failures: 0,
        last_error: null,
        stats: '[]',
        created_at: now,
        updated_at: now,
      })
      .execute();
    let consistent = false;
    // Only what verify() touches: the VM lookup and the recovery site's answer.
    const deps = {
      db: store.handle,
      incidents: new IncidentLog(store.handle),
      log: pino({ level: 'silent' }),
      vms: { get: async () => ({ id: 'vm-1', name: 'pg' }) },
      jobs: { define: () => undefined },
      peers: {
        client: async () => ({
          request: async () => ({
            point: { id: 'p2', time: now, consistency: 'crash', committedAt: now },
            report: {
              consistent,
              gaps: consistent ? [] : [{ from: 5, to: 9 }],
              tornCount: consistent ? 0 : 1,
              gapFreePrefix: 4,
              lastSequence: 12,
            },
          }),
        }),
      },
    } as unknown as Deps;
    const replication = new ReplicationService(deps);
    const open = () => deps.incidents.list({ open: true, kind: POINT_VERIFY_FAILED });

    await replication.verify('pg');
    const [incident] = await open();
    assert.equal(incident?.target, 'vm:vm-1');
    assert.equal(incident.severity, 'critical');
    assert.match(
      incident.message,
      /recovery point p2 of pg at site-b failed verification: 1 gap\(s\), 1 torn record\(s\) after a gap-free prefix of 4/,
    );
    await replication.verify('pg');
    assert.equal(
      (await deps.incidents.list({ kind: POINT_VERIFY_FAILED })).length,
      1,
      'failing again is the same incident',
    );

    consistent = true;
    await replication.verify('pg');
    assert.deepEqual(await open(), []);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

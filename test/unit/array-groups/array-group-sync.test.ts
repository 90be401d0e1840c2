import { JobJournal } from '../../../src/jobs/job-journal.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { ArrayGroupSync } from '../../../src/array-groups/array-group-sync.js';
import type { ArrayBinding } from '../../../src/array-groups/array-groups.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { createLogger } from '../../../src/core/logger.js';

/*
 * The RPO scheduler of array-based groups, against a fake array (this module's unit test):
 * each sync's outcome is kept (point, bytes, failures, error); manual and scheduled syncs of
 * one group never overlap; a group with an RPO syncs at once when it has no point yet; one
 * whose VMs were failed over elsewhere is not synced.
 */
test('array-based group syncs: state kept, never overlapping, scheduled on the RPO, skipped after a failover', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-array-sync-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const binding = (rpoSeconds: number | null): string =>
      JSON.stringify({
        storage: 's',
        arrayId: 'a',
        deviceIds: ['d'],
        peer: 'site-b',
        forced: false,
        compat: 'ok',
        rpoSeconds,
      } satisfies ArrayBinding);
    const now = new Date().toISOString();
    await store.db
      .insertInto('protection_groups')
      .values([
        { id: 'pg-1', name: 'manual', created_at: now, array_binding: binding(null) },
        { id: 'pg-2', name: 'onrpo', created_at: now, array_binding: binding(3600) },
        { id: 'pg-3', name: 'moved', created_at: now, array_binding: binding(3600) },
      ])
      .execute();
    let inFlight = 0;
    let most = 0;
    let fail = false;
    const synced: string[] = [];
    const groups = {
      bindings: async () =>
        (await store.db.selectFrom('protection_groups').selectAll().execute()).map((r) => ({
          id: r.id,
          name: r.name,
          binding: JSON.parse(r.array_binding!) as ArrayBinding,
        })),
      binding: async (name: string) => {
        const r = await store.db
          .selectFrom('protection_groups')
          .selectAll()
          .where('name', '=', name)
          .executeTakeFirst();
        if (!r) throw new Error('no such group');
        return JSON.parse(r.array_binding!) as ArrayBinding;
      },
      sync: async (name: string) => {
        inFlight += 1;
        most = Math.max(most, inFlight);
        await new Promise((r) => setTimeout(r, 20));
        inFlight -= 1;
        if (fail) throw new Error('the peer array is unreachable');
        synced.push(name);
        return { devices: [{ id: 'd', point: `p${synced.length}`, bytesSent: 1000 }] };
      },
      failedOverElsewhere: async (name: string) => name === 'moved',
    };
    const jobs = new JobJournal(store.handle);
    const sync = new ArrayGroupSync({ db: store.handle, groups, jobs, log: createLogger({ level: 'silent' }) });

    await Promise.all([sync.syncNow('manual'), sync.syncNow('manual'), sync.syncNow('manual')]);
    assert.equal(most, 1, 'syncs of one group run one at a time');
    const ok = await sync.status('manual');
    assert.deepEqual(
      [ok.lastPoint, ok.lastBytesSent, ok.failures, ok.lastError, ok.rpoSeconds, ok.rpoViolated],
      ['p3', 1000, 0, null, null, false],
    );
    assert.ok(ok.lagSec !== null && ok.lagSec >= 0);

    fail = true;
    await assert.rejects(sync.syncNow('manual'), /unreachable/);
    const failed = await sync.status('manual');
    assert.deepEqual(
      [failed.failures, failed.lastError, failed.lastPoint],
      [1, 'the peer array is unreachable', 'p3'],
      'a failure keeps the last good point',
    );
    // Each sync is a job of the journal (`mamori job list`), with its steps.
    const syncJobs = await jobs.list({ kind: 'array-sync', target: 'manual' });
    assert.deepEqual(
      syncJobs.map((j) => [j.state, j.steps.map((st) => st.state).join(',')]),
      [['failed', 'failed,pending'], ...Array(3).fill(['succeeded', 'done,done'])],
    );
    fail = false;

    // On start: the group with an RPO and no point syncs at once; the one failed over elsewhere does not.
    await sync.start();
    await new Promise((r) => setTimeout(r, 300));
    sync.stop();
    assert.ok(synced.includes('onrpo'), `scheduled: ${synced.join(', ')}`);
    assert.ok(!synced.includes('moved'), 'a group whose VMs run at the peer is not synced');
    assert.equal((await sync.status('onrpo')).rpoSeconds, 3600);
    await assert.rejects(sync.status('nosuch'), (e) => isMamoriError(e, 'GROUP_NOT_FOUND'));
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

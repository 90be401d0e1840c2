import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';

test('an incident opens once per kind and target, clears once, and a new one is a new row', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-events-'));
  try {
    const store = await openSqliteStore(join(dir, 'site.db'));
    const log = new IncidentLog(store.handle);
    const { incident: first, opened } = await log.raise({
      kind: 'replication.rpo-violated',
      target: 'vm:1',
      severity: 'warning',
      message: 'behind',
      details: { rpoSeconds: 10 },
    });
    assert.equal(opened, true);
    const { incident: again, opened: openedAgain } = await log.raise({
      kind: 'replication.rpo-violated',
      target: 'vm:1',
      severity: 'warning',
      message: 'still behind',
    });
    assert.equal(openedAgain, false);
    assert.equal(again.id, first.id, 'raising an open incident again changes nothing');
    assert.equal(again.message, 'behind');
    await log.raise({ kind: 'replication.rpo-violated', target: 'vm:2', severity: 'warning', message: 'other vm' });
    assert.equal((await log.list({ open: true })).length, 2);

    assert.equal(await log.clear('replication.rpo-violated', 'vm:1'), true);
    assert.equal(await log.clear('replication.rpo-violated', 'vm:1'), false, 'nothing open to clear');
    assert.equal(await log.openFor('replication.rpo-violated', 'vm:1'), null);
    const next = await log.raise({
      kind: 'replication.rpo-violated',
      target: 'vm:1',
      severity: 'warning',
      message: 'behind again',
    });
    assert.equal(next.opened, true);
    assert.notEqual(next.incident.id, first.id);
    const forVm1 = await log.list({ target: 'vm:1' });
    assert.deepEqual(forVm1.map((i) => [i.message, i.clearedAt === null]).sort(), [
      ['behind again', true],
      ['behind', false],
    ]);
    assert.deepEqual(forVm1.find((i) => i.id === first.id)?.details, { rpoSeconds: 10 });
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { AlertDeliveryRepo } from '../../../src/store/repos/alert-delivery-repo.js';
import { IncidentRepo } from '../../../src/store/repos/incident-repo.js';
import { JobRepo } from '../../../src/store/repos/job-repo.js';

test('alert deliveries: history is skipped when a webhook is first set, new transitions are owed once, a resolved waits for its firing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-alert-repo-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const incidents = new IncidentRepo(store.handle);
    const deliveries = new AlertDeliveryRepo(store.handle);
    const base = { kind: 'k', severity: 'warning' as const, message: 'm', details: { a: 1 } };
    await incidents.insert({
      ...base,
      id: 'evt-old',
      target: 't1',
      openedAt: '2026-01-01T00:00:00.000Z',
      clearedAt: '2026-01-01T01:00:00.000Z',
    });
    await incidents.insert({
      ...base,
      id: 'evt-open',
      target: 't2',
      openedAt: '2026-01-01T02:00:00.000Z',
      clearedAt: null,
    });
    await deliveries.setWebhook({ url: 'sealed', configuredAt: '2026-01-02T00:00:00.000Z' });
    assert.deepEqual(await deliveries.webhook(), { url: 'sealed', configuredAt: '2026-01-02T00:00:00.000Z' });
    assert.equal(await deliveries.enqueueNew('2026-01-02T00:00:00.000Z'), 1, 'only the open incident is news');
    assert.equal(await deliveries.enqueueNew('2026-01-02T00:00:00.000Z'), 0, 'each transition is owed once');
    assert.equal(await incidents.clearOpen('k', 't2', '2026-01-02T01:00:00.000Z'), true);
    assert.equal(await deliveries.enqueueNew('2026-01-02T01:00:00.000Z'), 1);
    let due = await deliveries.due('2026-01-03T00:00:00.000Z', 10);
    assert.deepEqual(
      due.map((d) => [d.incident.id, d.status]),
      [['evt-open', 'firing']],
      'the resolved waits for its firing',
    );
    assert.deepEqual(due[0]!.incident.details, { a: 1 });
    await deliveries.markDelivered('evt-open', 'firing', '2026-01-03T00:00:00.000Z');
    due = await deliveries.due('2026-01-03T00:00:00.000Z', 10);
    assert.deepEqual(
      due.map((d) => [d.incident.id, d.status]),
      [['evt-open', 'resolved']],
    );
    await deliveries.markFailed('evt-open', 'resolved', 'refused', null);
    const counts = await deliveries.countsByState();
    assert.deepEqual([counts.get('delivered'), counts.get('failed'), counts.get('skipped')], [1, 1, 2]);
    assert.deepEqual(
      (await deliveries.recent(10)).map((r) => [r.status, r.state, r.attempts]),
      [
        ['resolved', 'failed', 1],
        ['firing', 'delivered', 1],
      ]
        .sort()
        .reverse(),
    );
    await deliveries.clearWebhook();
    assert.equal(await deliveries.webhook(), null);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('job steps are counted per kind and state from the decoded journal', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-job-repo-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const jobs = new JobRepo(store.handle);
    await jobs.insert({
      id: 'j1',
      kind: 'a',
      target: null,
      steps: [
        { name: 'x', state: 'done' },
        { name: 'y', state: 'pending' },
      ],
      at: 'now',
    });
    await jobs.insert({ id: 'j2', kind: 'a', target: null, steps: [{ name: 'x', state: 'done' }], at: 'now' });
    const counts = (await jobs.stepCountsByKindAndState()).sort((p, q) => p.state.localeCompare(q.state));
    assert.deepEqual(counts, [
      { kind: 'a', state: 'done', count: 2 },
      { kind: 'a', state: 'pending', count: 1 },
    ]);
    assert.equal(
      (await store.db.selectFrom('jobs').select('steps').where('id', '=', 'j2').executeTakeFirstOrThrow()).steps,
      '[{"name":"x","state":"done"}]',
    );
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

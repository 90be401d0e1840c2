import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IncidentRepo } from '../../../src/store/repos/incident-repo.js';
import { describeEachDialect } from '../../harness/store-dialects.js';

describeEachDialect('incident repository', (f) => {
  test('openOfKind: every open incident of the kind, however many, none cleared and none of another kind', async () => {
    const store = await f.open();
    const incidents = new IncidentRepo(store.handle);
    const base = { severity: 'warning' as const, message: 'm', details: null };
    // More than list()'s default page of 100: the status of all replications needs every one.
    for (let i = 0; i < 150; i++)
      await incidents.insert({
        ...base,
        id: `evt-${i}`,
        kind: 'rpo-violated',
        target: `vm:v${i}`,
        openedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
        clearedAt: null,
      });
    await incidents.insert({
      ...base,
      id: 'evt-other',
      kind: 'cycle-failed',
      target: 'vm:v0',
      openedAt: '2026-01-01T00:00:00.000Z',
      clearedAt: null,
    });
    assert.equal(await incidents.clearOpen('rpo-violated', 'vm:v3', '2026-01-02T00:00:00.000Z'), true);
    const open = await incidents.openOfKind('rpo-violated');
    assert.equal(open.length, 149);
    assert.ok(open.every((i) => i.kind === 'rpo-violated' && i.clearedAt === null));
    assert.ok(!open.some((i) => i.target === 'vm:v3'));
    assert.deepEqual(await incidents.openOfKind('nothing-of-this-kind'), []);
  });
});

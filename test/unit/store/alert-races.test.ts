import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AlertDeliveryRepo } from '../../../src/store/repos/alert-delivery-repo.js';
import { IncidentRepo } from '../../../src/store/repos/incident-repo.js';
import type { Store } from '../../../src/store/store.js';
import { describeEachDialect, type StoreFixture } from '../../harness/store-dialects.js';

/*
 * The alert outbox with two senders on one database (two servers on PostgreSQL; on SQLite one
 * store). Before, both read the same due rows and both posted them, and a failed try reported
 * after the webhook was removed made its skipped row pending again.
 */

const at = '2026-01-02T00:00:00.000Z';

async function twoServers(f: StoreFixture): Promise<[Store, Store]> {
  const first = await f.open();
  if (f.dialect === 'sqlite') return [first, first];
  const second = await f.reopen();
  // Every connection open before the race, so the transactions overlap.
  for (const s of [first, second])
    await Promise.all(Array.from({ length: 10 }, () => s.db.selectFrom('meta').select('key').execute()));
  return [first, second];
}

async function owed(store: Store, incidents: number): Promise<AlertDeliveryRepo> {
  const events = new IncidentRepo(store.handle);
  const deliveries = new AlertDeliveryRepo(store.handle);
  await deliveries.setWebhook({ url: 'sealed', configuredAt: at });
  for (let i = 0; i < incidents; i++)
    await events.insert({
      id: `evt-${i}`,
      kind: 'k',
      severity: 'warning',
      target: `t${i}`,
      message: 'm',
      details: null,
      openedAt: at,
      clearedAt: null,
    });
  assert.equal(await deliveries.enqueueNew(at), incidents);
  return deliveries;
}

describeEachDialect('alert outbox races', (f) => {
  test('two senders claiming the same due deliveries: each is taken by exactly one', async () => {
    const stores = await twoServers(f);
    await owed(stores[0], 5);
    const repos = stores.map((s) => new AlertDeliveryRepo(s.handle));
    const due = await repos[0]!.due('2026-01-03T00:00:00.000Z', 10);
    assert.equal(due.length, 5);
    const claims = await Promise.all(
      due.flatMap((d) =>
        Array.from({ length: 10 }, (_, i) =>
          repos[i % 2]!.claim(d.incident.id, d.status, '2026-01-03T00:00:00.000Z', '2026-01-03T00:01:00.000Z').then(
            (won) => (won ? d.incident.id : null),
          ),
        ),
      ),
    );
    const won = claims.filter((c) => c !== null).sort();
    assert.deepEqual(won, ['evt-0', 'evt-1', 'evt-2', 'evt-3', 'evt-4'], 'one claim per delivery');
    assert.deepEqual(await repos[1]!.due('2026-01-03T00:00:30.000Z', 10), [], 'a claimed delivery is not due again');
    assert.equal((await repos[1]!.due('2026-01-03T00:01:00.000Z', 10)).length, 5, 'until its lease ends');
  });

  test('the webhook removed while deliveries are in flight: their outcome never revives them', async () => {
    const stores = await twoServers(f);
    await owed(stores[0], 10);
    const repos = stores.map((s) => new AlertDeliveryRepo(s.handle));
    await Promise.all([
      repos[1]!.clearWebhook(),
      ...Array.from({ length: 10 }, (_, i) =>
        i % 2
          ? repos[i % 2]!.markFailed(`evt-${i}`, 'firing', 'timeout', '2026-01-03T00:00:00.000Z')
          : repos[i % 2]!.markDelivered(`evt-${i}`, 'firing', '2026-01-03T00:00:00.000Z'),
      ),
    ]);
    const counts = await repos[0]!.countsByState();
    assert.equal(counts.get('pending') ?? 0, 0, 'nothing is owed once the webhook is gone');
    assert.deepEqual(await repos[0]!.due('2030-01-01T00:00:00.000Z', 20), []);
  });
});

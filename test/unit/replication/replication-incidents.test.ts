import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';
import { LINK_SATURATED, ReplicationIncidents } from '../../../src/replication/replication-incidents.js';
import type { BehindVm } from '../../../src/replication/link-saturation.js';

const vm = (name: string, lagSeconds: number): BehindVm => ({
  vm: name,
  lagSeconds,
  rpoSeconds: 60,
  state: 'queued',
  place: 1,
  waitedSeconds: 10,
});

test('a saturated link: one incident per link, opened once (one alert), rewritten as VMs fall behind, cleared when none is', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-saturation-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const log = new IncidentLog(store.handle);
    let transitions = 0;
    log.onTransition(() => transitions++);
    const incidents = new ReplicationIncidents({
      incidents: log,
      log: pino({ level: 'silent' }),
      row: async () => undefined,
      vmName: async (id) => id,
    });
    const link = { peer: 'site-b', limit: 1, queued: 2, bitsPerSecond: 50_000_000, limitedBy: 'concurrency' as const };
    await incidents.linkSaturation({ ...link, behind: [vm('db', 70)], now: 0 });
    const first = await log.openFor(LINK_SATURATED, 'site:site-b');
    assert.ok(first);
    assert.match(first.message, /link to site-b .* 1 VM is behind: db lag 70s against an RPO of 60s/);
    // Held back by its one cycle in flight: the remedy says to run more.
    assert.match(first.message, /held back by the cycles in flight, not by a bandwidth cap/);
    assert.match(first.remedy ?? '', /cycles in flight are the limit.*'mamori site link site-b --concurrency 8'/);

    // The same VM a moment later: not rewritten (lags grow every second; one write per 30 s).
    await incidents.linkSaturation({ ...link, behind: [vm('db', 75)], now: 5_000 });
    assert.equal((await log.openFor(LINK_SATURATED, 'site:site-b'))?.message, first.message);
    // Another VM falls behind: the same incident says so at once.
    await incidents.linkSaturation({ ...link, behind: [vm('db', 80), vm('web', 65)], now: 10_000 });
    const updated = await log.openFor(LINK_SATURATED, 'site:site-b');
    assert.equal(updated?.id, first.id, 'one incident for the link, not one per change');
    assert.match(updated!.message, /2 VMs are behind: db lag 80s .*; web lag 65s/);
    assert.deepEqual(
      (updated!.details?.['behind'] as BehindVm[]).map((b) => b.vm),
      ['db', 'web'],
    );
    // Lags grow with the same VMs: rewritten after 30 s.
    await incidents.linkSaturation({ ...link, behind: [vm('db', 120), vm('web', 100)], now: 45_000 });
    assert.match((await log.openFor(LINK_SATURATED, 'site:site-b'))!.message, /db lag 120s/);
    assert.equal(transitions, 1, 'rewrites are not transitions: the alert fires once');
    // Now the cap is what holds it back (the same VMs): rewritten at once, with the other remedy.
    await incidents.linkSaturation({
      ...link,
      limitedBy: 'bandwidth',
      behind: [vm('db', 121), vm('web', 101)],
      now: 46_000,
    });
    const capped = (await log.openFor(LINK_SATURATED, 'site:site-b'))!;
    assert.match(capped.message, /held back by its bandwidth cap/);
    assert.equal(capped.details?.['limitedBy'], 'bandwidth');
    assert.match(capped.remedy ?? '', /bandwidth cap is used up.*'mamori site link site-b --bandwidth none'/);
    assert.equal(transitions, 1);

    await incidents.linkSaturation({ ...link, behind: [], now: 50_000 });
    assert.equal(await log.openFor(LINK_SATURATED, 'site:site-b'), null);
    assert.equal(transitions, 2, 'and once more when it clears');
    const all = await log.list({ kind: LINK_SATURATED });
    assert.equal(all.length, 1);
    assert.ok(all[0]!.clearedAt);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

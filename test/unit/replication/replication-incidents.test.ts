import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';
import {
  LINK_SATURATED,
  RPO_CLEAR_MS,
  RPO_VIOLATED,
  ReplicationIncidents,
  SATURATION_MIN_REWRITE_MS,
} from '../../../src/replication/replication-incidents.js';
import type { ReplicationRecord } from '../../../src/store/records/replica-record.js';
import type { BehindVm } from '../../../src/replication/link-saturation.js';

/** ReplicationIncidents over an IncidentLog on the store, counting the log's transitions (the alerts). */
function incidentsOn(
  store: { handle: ConstructorParameters<typeof IncidentLog>[0] },
  deps: Partial<ConstructorParameters<typeof ReplicationIncidents>[0]>,
): { log: IncidentLog; incidents: ReplicationIncidents; counter: { transitions: number } } {
  const log = new IncidentLog(store.handle);
  const counter = { transitions: 0 };
  log.onTransition(() => counter.transitions++);
  const incidents = new ReplicationIncidents({
    incidents: log,
    log: pino({ level: 'silent' }),
    row: async () => undefined,
    vmName: async (id) => id,
    ...deps,
  });
  return { log, incidents, counter };
}

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
    const { log, incidents, counter } = incidentsOn(store, {});
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
    assert.equal(counter.transitions, 1, 'rewrites are not transitions: the alert fires once');
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
    assert.equal(counter.transitions, 1);
    // VMs changing at every check (one commits, another falls behind): at most one rewrite per
    // SATURATION_MIN_REWRITE_MS; the next check after it writes the list as it is then.
    const bw = { ...link, limitedBy: 'bandwidth' as const };
    await incidents.linkSaturation({ ...bw, behind: [vm('db', 122), vm('mail', 61)], now: 47_000 });
    assert.doesNotMatch((await log.openFor(LINK_SATURATED, 'site:site-b'))!.message, /mail/);
    await incidents.linkSaturation({ ...bw, behind: [vm('web', 104), vm('mail', 63)], now: 48_000 });
    assert.doesNotMatch((await log.openFor(LINK_SATURATED, 'site:site-b'))!.message, /mail/);
    await incidents.linkSaturation({
      ...bw,
      behind: [vm('db', 126), vm('mail', 66)],
      now: 46_000 + SATURATION_MIN_REWRITE_MS,
    });
    const later = (await log.openFor(LINK_SATURATED, 'site:site-b'))!;
    assert.match(later.message, /2 VMs are behind: db lag 126s .*; mail lag 66s/);
    assert.equal(later.id, first.id);
    assert.equal(counter.transitions, 1);

    await incidents.linkSaturation({ ...link, behind: [], now: 60_000 });
    assert.equal(await log.openFor(LINK_SATURATED, 'site:site-b'), null);
    assert.equal(counter.transitions, 2, 'and once more when it clears');
    const all = await log.list({ kind: LINK_SATURATED });
    assert.equal(all.length, 1);
    assert.ok(all[0]!.clearedAt);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('an RPO broken for a moment at each cycle is one incident, cleared once the RPO has held for RPO_CLEAR_MS', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-rpo-hold-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  let now = Date.parse('2026-12-06T12:00:00Z');
  const row: ReplicationRecord = {
    vmId: 'v1',
    peer: 'site-b',
    replicaId: 'r1',
    rpoMs: 1_000,
    keepPoints: 24,
    state: 'enabled',
    generation: 1,
    lastPointAt: new Date(now).toISOString(),
    lastPointId: 'p1',
    failures: 0,
    lastError: null,
    stats: [],
    bandwidthBps: null,
    continuous: null,
    createdAt: new Date(now).toISOString(),
    updatedAt: new Date(now).toISOString(),
  };
  const { log, incidents, counter } = incidentsOn(store, {
    row: async () => ({ ...row }),
    vmName: async () => 'db',
    now: () => now,
  });
  /** A commit `after` ms from now, and the check that follows it. */
  const commitAfter = async (after: number): Promise<void> => {
    now += after;
    row.lastPointAt = new Date(now).toISOString();
    await incidents.checkRpo('v1');
  };
  try {
    // Cycles 1.6 s apart against an RPO of 1 s: broken between each two commits.
    for (let i = 0; i < 10; i++) {
      now += 1_200;
      await incidents.checkRpo('v1'); // the watch, as the newest point falls out of the RPO
      assert.ok(await log.openFor(RPO_VIOLATED, 'vm:v1'), `broken at cycle ${i}`);
      await commitAfter(400);
      assert.ok(await log.openFor(RPO_VIOLATED, 'vm:v1'), 'still open right after the commit');
    }
    assert.equal((await log.list({ kind: RPO_VIOLATED })).length, 1, 'one incident for the flapping');
    assert.equal(counter.transitions, 1, 'one alert');

    // Held since the last break: still open until RPO_CLEAR_MS has passed since it.
    await commitAfter(900);
    await commitAfter(900);
    assert.ok(await log.openFor(RPO_VIOLATED, 'vm:v1'));
    now += RPO_CLEAR_MS - 2_300;
    row.lastPointAt = new Date(now - 500).toISOString();
    await incidents.checkRpo('v1');
    assert.ok(await log.openFor(RPO_VIOLATED, 'vm:v1'), 'not yet: 100 ms short of the hold');
    now += 100;
    await incidents.checkRpo('v1');
    assert.equal(await log.openFor(RPO_VIOLATED, 'vm:v1'), null, 'cleared once held for RPO_CLEAR_MS');
    assert.equal(counter.transitions, 2, 'and one resolution');

    // Broken again later: a new incident. Paused: cleared at once, without the hold.
    now += 5_000;
    await incidents.checkRpo('v1');
    assert.ok(await log.openFor(RPO_VIOLATED, 'vm:v1'));
    row.state = 'paused';
    await incidents.checkRpo('v1');
    assert.equal(await log.openFor(RPO_VIOLATED, 'vm:v1'), null);
    assert.equal((await log.list({ kind: RPO_VIOLATED })).length, 2);
  } finally {
    incidents.shutdown();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerLinks, type LinkRepo } from '../../../src/replication/peer-links.js';
import type { PeerLink, PeerRecord } from '../../../src/store/records/peer-record.js';
import { MamoriError, isMamoriError } from '../../../src/core/mamori-error.js';
import { FakeBudgetClock } from '../../harness/fake-budget-clock.js';

/** The peers table in memory: what PeerLinks reads and writes through SitePeers. */
function repo(links: Record<string, PeerLink | undefined>): LinkRepo & { stored: Record<string, PeerLink> } {
  const stored: Record<string, PeerLink> = {};
  const rec = (name: string): PeerRecord => ({
    id: name,
    name,
    url: null,
    caCertPem: '',
    caFingerprint: name,
    token: null,
    inboundTokenId: null,
    createdAt: '',
    updatedAt: '',
    ...((stored[name] ?? links[name]) ? { link: stored[name] ?? links[name] } : {}),
  });
  return {
    stored,
    records: async () => Object.keys(links).map(rec),
    record: async (name) => {
      if (!(name in links)) throw new MamoriError('PEER_NOT_FOUND', `no paired site named ${name}`);
      return rec(name);
    },
    setLink: async (name, link) => {
      stored[name] = link;
    },
  };
}

/** A clock at a local wall time: Monday 2026-12-07 at hh:00, in the site's time zone. */
function clockAt(hh: number): FakeBudgetClock {
  const clock = new FakeBudgetClock();
  const at = new Date(2026, 11, 7, hh).getTime();
  return Object.assign(clock, { now: () => at });
}

test('the rate in force follows the schedule in local time; concurrency defaults to 4', async () => {
  const r = repo({
    office: { bitsPerSecond: 80_000_000, schedule: 'Mon-Fri 08:00-18:00', concurrency: 2 },
    open: undefined,
  });
  const day = new PeerLinks({ repo: r, clock: clockAt(10) });
  await day.load();
  assert.equal(day.rateNow('office'), 10_000_000);
  assert.equal(day.concurrency('office'), 2);
  assert.equal(day.concurrency('open'), 4);
  assert.equal(day.concurrency('paired-later'), 4);
  const night = new PeerLinks({ repo: r, clock: clockAt(22) });
  await night.load();
  assert.equal(night.rateNow('office'), null, 'full rate outside the schedule');
});

test('a throttle only where something caps: the link (any hour, if it has a schedule) or the VM', async () => {
  const links = new PeerLinks({
    repo: repo({ capped: { bitsPerSecond: 8_000_000, schedule: null, concurrency: null }, open: undefined }),
    clock: clockAt(10),
  });
  await links.load();
  assert.equal(links.sender('open', null), null, 'nothing caps: full speed, large chunks');
  const vmCapped = links.sender('open', 1_000_000);
  assert.ok(vmCapped, "the VM's own cap");
  vmCapped.close();
  const a = links.sender('capped', null);
  const b = links.sender('capped', null);
  assert.ok(a && b);
  a.close();
  b.close();
});

test('set: validated whole, stored, and read at once; an unknown peer is PEER_NOT_FOUND', async () => {
  const r = repo({ 'site-b': undefined });
  const links = new PeerLinks({ repo: r, clock: clockAt(10) });
  await links.load();
  assert.deepEqual(await links.set('site-b', { bandwidth: '50M', concurrency: 1 }), {
    bitsPerSecond: 50_000_000,
    schedule: null,
    concurrency: 1,
  });
  assert.deepEqual(r.stored['site-b'], { bitsPerSecond: 50_000_000, schedule: null, concurrency: 1 });
  assert.equal(links.rateNow('site-b'), 6_250_000);
  assert.equal(links.concurrency('site-b'), 1);
  await assert.rejects(links.set('site-b', { schedule: 'Mon 8-9' }), (e: unknown) =>
    isMamoriError(e, 'LINK_SCHEDULE_INVALID'),
  );
  assert.deepEqual(r.stored['site-b'].schedule, null, 'a refused change stores nothing');
  await assert.rejects(links.set('site-z', { concurrency: 2 }), (e: unknown) => isMamoriError(e, 'PEER_NOT_FOUND'));
});

test('a stored schedule that no longer parses caps at all hours rather than stopping the start', async () => {
  const links = new PeerLinks({
    repo: repo({ odd: { bitsPerSecond: 8_000_000, schedule: 'Weekdays 8-18', concurrency: null } }),
    clock: clockAt(22),
  });
  await links.load();
  assert.equal(links.rateNow('odd'), 1_000_000);
});

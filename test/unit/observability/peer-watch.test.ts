import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';
import { PeerWatch, PEER_UNREACHABLE } from '../../../src/sites/peer-watch.js';
import type { PeerState, PeerView } from '../../../src/sites/peer-record.js';

function peer(name: string, state: PeerState): PeerView {
  return {
    name,
    url: state === 'not-callable' ? null : `https://${name}:8443`,
    fingerprint: 'ab',
    direction: 'both',
    pairedAt: '',
    updatedAt: '',
    status: {
      state,
      checkedAt: null,
      rttMs: null,
      clockOffsetMs: null,
      error: state === 'unreachable' ? { code: 'PEER_UNREACHABLE', message: 'connect ETIMEDOUT' } : null,
    },
    link: { bitsPerSecond: null, schedule: null, concurrency: 4 },
  };
}

test('a peer is unreachable after two failed checks in a row, clears at its first answer, and when unpaired', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-peerwatch-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const incidents = new IncidentLog(store.handle);
    let peers = [peer('b', 'unreachable'), peer('c', 'reachable'), peer('d', 'not-callable')];
    const watch = new PeerWatch({
      peers: { list: async () => peers },
      incidents,
      log: pino({ level: 'silent' }),
      intervalMs: 60_000,
    });
    const open = async () => (await incidents.list({ open: true, kind: PEER_UNREACHABLE })).map((i) => i.target);

    await watch.checkOnce();
    assert.deepEqual(await open(), [], 'one failed check is not an incident yet');
    await watch.checkOnce();
    assert.deepEqual(await open(), ['site:b']);
    const [incident] = await incidents.list({ open: true });
    assert.equal(incident!.severity, 'critical');
    assert.match(incident!.message, /paired site b \(https:\/\/b:8443\) does not answer: connect ETIMEDOUT/);
    await watch.checkOnce();
    assert.equal((await incidents.list({})).length, 1, 'still one incident while it stays down');

    peers = [peer('b', 'reachable')];
    await watch.checkOnce();
    assert.deepEqual(await open(), []);
    // Down again: a new incident; then unpaired while down: cleared, nothing left to watch.
    peers = [peer('b', 'cert-mismatch')];
    await watch.checkOnce();
    await watch.checkOnce();
    assert.deepEqual(await open(), ['site:b']);
    peers = [];
    await watch.checkOnce();
    assert.deepEqual(await open(), []);
    assert.equal((await incidents.list({ kind: PEER_UNREACHABLE })).length, 2);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('the watch keeps when each peer last answered and when it judged it gone after that (two failed checks in a row)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-peerwatch-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    let peers = [peer('b', 'reachable')];
    const watch = new PeerWatch({
      peers: { list: async () => peers },
      incidents: new IncidentLog(store.handle),
      log: pino({ level: 'silent' }),
      intervalMs: 60_000,
    });
    assert.equal(watch.contact('b'), null, 'nothing known before a check');
    await watch.checkOnce();
    const up = watch.contact('b')!;
    assert.ok(up.lastReachableAt !== null);
    assert.equal(up.unreachableSince, null);
    peers = [peer('b', 'unreachable')];
    await watch.checkOnce();
    assert.equal(
      watch.contact('b')!.unreachableSince,
      null,
      'one failed check (a slow answer under load) is not a site gone',
    );
    peers = [peer('b', 'reachable')];
    await watch.checkOnce();
    peers = [peer('b', 'unreachable')];
    await watch.checkOnce();
    await watch.checkOnce();
    const down = watch.contact('b')!;
    assert.ok(down.lastReachableAt! > up.lastReachableAt! || down.lastReachableAt === up.lastReachableAt);
    assert.ok(down.unreachableSince !== null && down.unreachableSince >= down.lastReachableAt!);
    // Later failures keep the first judgement: the bound is when the site was first found gone.
    await watch.checkOnce();
    assert.equal(watch.contact('b')!.unreachableSince, down.unreachableSince);
    peers = [peer('b', 'reachable')];
    await watch.checkOnce();
    assert.equal(watch.contact('b')!.unreachableSince, null, 'an answer clears it');
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

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
    name, url: state === 'not-callable' ? null : `https://${name}:8443`, fingerprint: 'ab', direction: 'both', pairedAt: '', updatedAt: '',
    status: { state, checkedAt: null, rttMs: null, clockOffsetMs: null, error: state === 'unreachable' ? { code: 'PEER_UNREACHABLE', message: 'connect ETIMEDOUT' } : null },
  };
}

test('a peer is unreachable after two failed checks in a row, clears at its first answer, and when unpaired', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-peerwatch-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const incidents = new IncidentLog(store.db);
    let peers = [peer('b', 'unreachable'), peer('c', 'reachable'), peer('d', 'not-callable')];
    const watch = new PeerWatch({ peers: { list: async () => peers }, incidents, log: pino({ level: 'silent' }), intervalMs: 60_000 });
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

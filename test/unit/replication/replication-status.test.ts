import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { replicationStatusOf } from '../../../src/replication/replication-status.js';
import type { ReplicationSummary } from '../../../src/store/repos/replication-repo.js';

const NOW = Date.parse('2026-12-07T12:00:00Z');
const row: ReplicationSummary = {
  vmId: 'v1',
  vmName: 'db',
  peer: 'site-b',
  rpoMs: 10_000,
  keepPoints: 24,
  state: 'enabled',
  generation: 3,
  lastPointAt: new Date(NOW - 60_000).toISOString(),
  failures: 0,
  lastError: null,
  bandwidthBps: null,
  continuous: { checkpointMs: 1000, journalMs: 3600_000 },
  lastCycle: null,
  replica: null,
};
const live = { rpoViolatedSince: null, nextCycleAt: null, queue: { running: false, place: null }, journal: null };

describe('replication status', () => {
  it("measures a continuous replica's lag from the journal's newest checkpoint at the recovery site", () => {
    const s = replicationStatusOf(row, { ...live, journalAt: NOW - 800 }, NOW);
    assert.equal(s.lagSeconds, 0.8);
    assert.equal(s.rpoViolated, false);
    assert.deepEqual(s.continuous, { checkpointSeconds: 1, journalSeconds: 3600, appCheckpointSeconds: null });
  });

  it('falls back to the last cycle point when no journal has shipped, or when that point is newer', () => {
    const none = replicationStatusOf(row, { ...live, journalAt: null }, NOW);
    assert.equal(none.lagSeconds, 60);
    assert.equal(none.rpoViolated, true);
    const older = replicationStatusOf(row, { ...live, journalAt: NOW - 120_000 }, NOW);
    assert.equal(older.lagSeconds, 60, 'an older journal instant does not hide the newer point');
    const cycles = replicationStatusOf(
      { ...row, continuous: null, lastPointAt: null },
      { ...live, journalAt: null },
      NOW,
    );
    assert.equal(cycles.lagSeconds, null);
    assert.equal(cycles.rpoViolated, false);
    assert.equal(cycles.continuous, null);
  });
});

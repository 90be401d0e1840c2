import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';
import { JOURNAL_SPACE } from '../../../src/events/incident-kinds.js';
import { forecastJournal, type JournalForecast } from '../../../src/cdp/journal-forecast.js';
import { JournalSpaceWatch } from '../../../src/replication/journal-space-watch.js';

const MiB = 1024 * 1024;
const MINUTE_US = 60_000_000;

test("a journal's forecast: its rate once it covers a minute, a whole window and a quarter at that rate, against its room", () => {
  const young = forecastJournal({ bytes: 10 * MiB, fromUs: 0, toUs: 30_000_000, windowMs: 3600_000 }, 100 * MiB);
  assert.deepEqual(young, {
    bytes: 10 * MiB,
    bytesPerSecond: null,
    windowSeconds: 3600,
    neededBytes: null,
    availableBytes: 110 * MiB,
    fits: null,
  });
  // 60 MiB over 10 minutes: 0.1 MiB/s; an hour's window and a quarter takes 450 MiB.
  const f = forecastJournal({ bytes: 60 * MiB, fromUs: 0, toUs: 10 * MINUTE_US, windowMs: 3600_000 }, 500 * MiB);
  assert.equal(f.bytesPerSecond, Math.round((60 * MiB) / 600));
  assert.equal(f.neededBytes, Math.ceil(((60 * MiB) / 600) * 3600 * 1.25));
  assert.equal(f.availableBytes, 560 * MiB);
  assert.equal(f.fits, true);
  assert.equal(
    forecastJournal({ bytes: 60 * MiB, fromUs: 0, toUs: 10 * MINUTE_US, windowMs: 4 * 3600_000 }, 500 * MiB).fits,
    false,
  );
});

test('the watch opens one incident per journal that will not fit, rewrites it, and clears it with room, or with the replica', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-journal-space-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const incidents = new IncidentLog(store.handle);
    let replicas = [
      { id: 'rep-1', vmName: 'db1', sourceSite: 'site-a' },
      { id: 'rep-2', vmName: 'web1', sourceSite: 'site-a' },
      { id: 'rep-3', vmName: 'cycles-only', sourceSite: 'site-a' },
    ];
    const usage = { bytes: 60 * MiB, fromUs: 0, toUs: 10 * MINUTE_US, windowMs: 3600_000 };
    let free = new Map<string, number>([
      ['rep-1', 100 * MiB], // needs 450 MiB, has 160: does not fit
      ['rep-2', 1000 * MiB], // fits
    ]);
    const forecast = async (id: string): Promise<JournalForecast | null> =>
      free.has(id) ? forecastJournal(usage, free.get(id)!) : null;
    const watch = new JournalSpaceWatch({
      replicas: async () => replicas,
      forecast,
      incidents,
      log: pino({ level: 'silent' }),
    });
    const open = async () => await incidents.list({ open: true, kind: JOURNAL_SPACE });

    await watch.check();
    const [first, ...none] = await open();
    assert.deepEqual(none, []);
    assert.equal(first!.target, 'replica:rep-1');
    assert.match(
      first!.message,
      /journal of db1 \(from site-a\) grows .*\/s: its 1 h window needs .* and it has 160 MiB here/,
    );
    assert.equal(first!.details!['neededBytes'], Math.ceil(((60 * MiB) / 600) * 3600 * 1.25));

    // Still short: the same incident, rewritten.
    free.set('rep-1', 120 * MiB);
    await watch.check();
    const again = await open();
    assert.equal(again.length, 1);
    assert.equal(again[0]!.id, first!.id);
    assert.match(again[0]!.message, /it has 180 MiB here/);

    // Just enough room is not enough to clear: 90% of it must do.
    free.set('rep-1', 450 * MiB - 60 * MiB);
    await watch.check();
    assert.equal((await open()).length, 1, 'no flapping at the edge');
    free.set('rep-1', 600 * MiB);
    await watch.check();
    assert.deepEqual(await open(), []);

    // Short again, then the replica goes: its incident goes with it.
    free = new Map([['rep-1', 10 * MiB]]);
    await watch.check();
    assert.equal((await open()).length, 1);
    replicas = replicas.filter((r) => r.id !== 'rep-1');
    await watch.check();
    assert.deepEqual(await open(), []);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

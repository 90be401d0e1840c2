/**
 * min_rpo_held_seconds on the product path: two real site servers (`mamori serve`, paired as
 * the integration tests pair them, each in its network namespace, joined by a veth or by the
 * emulated WAN of a profile: test/harness/wan-link.ts), replication enabled through the CLI at
 * the smallest RPO the product accepts, the site's own scheduler deciding when each cycle
 * runs, and a running test guest whose write log writes 256 records of 4 KiB a second
 * (1 MiB/s), each durable before the next, for the whole measurement.
 *
 * The lag that matters is the one just before a commit: the newest point is then as old as it
 * gets. The site does not log commit instants, so this polls the source site's database (its
 * replications row, read-only: a CLI process per poll would take CPU from the guest, and the
 * namespaced sites are not reachable from here) and bounds each commit between the last poll
 * that showed the previous point and the first that showed the new one. The figure is the largest such upper bound (or the largest lag any poll saw, if
 * larger: a cycle may still run when the window closes): what the RPO would have to be to
 * never be exceeded, as measured, rounded up to the second. The guest's achieved write rate
 * is recorded beside it: on a loaded machine a TCG guest may not reach 1 MiB/s.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { parseSerialAcks } from '../../src/guest/writelog-verifier.js';
import { sleep } from '../../test/harness/site-process.js';
import { TwoSites } from '../../test/harness/two-sites.js';
import type { WanProfileName } from '../../test/harness/wan-profile.js';
import type { CycleStats } from '../../src/replication/replication-service.js';

const MiB = 1024 * 1024;
/** The test guest's record: 4 KiB. 256 a second is 1 MiB/s. */
const RECORD_BYTES = 4096;
const RECORDS_PER_SECOND = 256;
/** The smallest RPO `replicate enable` accepts (src/replication/rpo-scheduler.ts RPO_LIMITS). */
const RPO = '1s';
const POLL_MS = 250;

export interface MinRpoFigure {
  metric: string;
  value: number;
  unit: 's';
  baseline: null;
  ratio: number;
  goal: string;
  met: null;
  [k: string]: unknown;
}

interface Incident {
  kind: string;
  openedAt: string;
  clearedAt: string | null;
}

/** The source's replication row and RPO incidents, read from its database (SQLite, WAL: readers never block it). */
function readSource(
  dataDir: string,
  since: number,
): {
  lastPointAt: string | null;
  failures: number;
  lastCycle: CycleStats | null;
  rpoIncidents: Incident[];
} {
  const db = new Database(join(dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('SELECT last_point_at, failures, stats FROM replications').get() as
      { last_point_at: string | null; failures: number; stats: string } | undefined;
    const incidents = db
      .prepare("SELECT kind, opened_at, cleared_at FROM events WHERE kind = 'replication.rpo-violated'")
      .all() as { kind: string; opened_at: string; cleared_at: string | null }[];
    const stats = row ? (JSON.parse(row.stats) as CycleStats[]) : [];
    return {
      lastPointAt: row?.last_point_at ?? null,
      failures: row?.failures ?? 0,
      lastCycle: stats.at(-1) ?? null,
      rpoIncidents: incidents
        .map((i) => ({ kind: i.kind, openedAt: i.opened_at, clearedAt: i.cleared_at }))
        .filter((i) => Date.parse(i.openedAt) >= since),
    };
  } finally {
    db.close();
  }
}

/** The highest acknowledged sequence number; a loop, since ten minutes at 1 MiB/s is over 150,000 acks, too many to spread into Math.max. */
function newestAck(seqs: number[]): number {
  let newest = 0;
  for (const s of seqs) if (s > newest) newest = s;
  return newest;
}

export async function measureMinRpo(opts: {
  seconds: number;
  log: (s: string) => void;
  /** The emulated WAN between the sites; none: a bare veth. */
  wan?: WanProfileName;
}): Promise<MinRpoFigure> {
  const { log } = opts;
  const sites = await TwoSites.create(opts.wan ? { wan: opts.wan } : {});
  const a = sites.a;
  try {
    await sites.pairBothWays();
    log(`sites up over ${opts.wan ?? 'a veth'}: ${a.url} (source), ${sites.b.url} (recovery)`);

    // The log never wraps: the data disk holds every record of the run, with room to spare.
    const dataMiB = Math.ceil((opts.seconds * RECORDS_PER_SECOND * RECORD_BYTES * 1.25) / MiB) + 64;
    await a.cliJson(
      'vm',
      'create',
      'pg',
      '--test-guest',
      '--data-disk',
      `${dataMiB}M`,
      '--writelog-rate',
      String(RECORDS_PER_SECOND),
    );
    const started = await a.cliJson<{ serialLog: string }>('vm', 'start', 'pg');
    const acks = async (): Promise<number[]> =>
      parseSerialAcks(await readFile(started.serialLog, 'utf8').catch(() => ''));
    await a.waitFor('the guest writing its log', async () => (await acks()).length > 0, 600_000);
    log('guest writing; enabling replication');

    await a.cliJson('replicate', 'enable', 'pg', '--to', 'site-b', '--rpo', RPO);
    const status = async () => readSource(a.dataDir, t0);
    let t0 = Date.now();
    // The first (full) cycle is the seed, not the steady state the figure is about.
    await a.waitFor('the first point', async () => (await status()).lastPointAt, 900_000);

    t0 = Date.now();
    const seqAtStart = newestAck(await acks());
    let prev = await status();
    let prevPolledAt = Date.now();
    let commits = 0;
    let maxLagUpperMs = 0;
    let maxLagLowerMs = 0;
    let maxSampledLagMs = 0;
    const cycleMs: number[] = [];
    const sentBytes: number[] = [];
    while (Date.now() - t0 < opts.seconds * 1000) {
      await sleep(POLL_MS);
      const s = await status();
      const polledAt = Date.now();
      if (s.lastPointAt !== null) maxSampledLagMs = Math.max(maxSampledLagMs, polledAt - Date.parse(s.lastPointAt));
      if (s.lastPointAt !== prev.lastPointAt && prev.lastPointAt !== null) {
        // The commit of the new point happened after the previous poll and by this one; just
        // before it, the newest point was the previous one.
        const prevPoint = Date.parse(prev.lastPointAt);
        maxLagUpperMs = Math.max(maxLagUpperMs, polledAt - prevPoint);
        maxLagLowerMs = Math.max(maxLagLowerMs, prevPolledAt - prevPoint);
        commits++;
        if (s.lastCycle) {
          cycleMs.push(s.lastCycle.durationMs);
          sentBytes.push(s.lastCycle.bytesSent);
        }
      }
      prev = s;
      prevPolledAt = polledAt;
    }
    const measuredMs = Date.now() - t0;
    const seqAtEnd = newestAck(await acks());
    const written = (seqAtEnd - seqAtStart) * RECORD_BYTES;
    const final = await status();
    const rpoIncidents = final.rpoIncidents;
    await a.cliJson('vm', 'kill', 'pg').catch(() => undefined);

    const mean = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((x, y) => x + y, 0) / xs.length);
    // A cycle still running when the window closed leaves the newest point older than any
    // commit showed: the largest lag any poll saw counts too.
    const secs = Math.ceil(Math.max(maxLagUpperMs, maxSampledLagMs) / 1000);
    const measured = measuredMs / 1000;
    log(
      `min RPO run: ${commits} commits in ${measured.toFixed(0)} s, max lag before a commit ${maxLagLowerMs}..${maxLagUpperMs} ms, ` +
        `${(written / MiB).toFixed(0)} MiB written by the guest (${(written / MiB / measured).toFixed(2)} MiB/s), ${rpoIncidents.length} RPO incident(s)`,
    );
    return {
      metric: opts.wan ? `min_rpo_held_seconds_${opts.wan.replace(/-/g, '_')}` : 'min_rpo_held_seconds',
      value: secs,
      unit: 's',
      baseline: null,
      ratio: secs,
      goal: 'report',
      met: null,
      note:
        `${measured < 600 ? 'shortened: ' : ''}two paired site servers (${opts.wan ? `over the emulated WAN ${opts.wan}` : 'over a veth'}), replication enabled with --rpo ${RPO} (the smallest accepted) and left to the site's scheduler ` +
        `for ${measured.toFixed(0)} s while a running test guest wrote its log at ${RECORDS_PER_SECOND} records of 4 KiB a second (target 1 MiB/s, achieved ` +
        `${(written / MiB / measured).toFixed(2)} MiB/s); value = largest age of the newest point seen: just before a commit (upper bound from polling every ${POLL_MS} ms) or at any poll, rounded up`,
      rpoSeconds: 1,
      commits,
      maxLagBeforeCommitMs: { atLeast: maxLagLowerMs, atMost: maxLagUpperMs },
      maxSampledLagMs: Math.round(maxSampledLagMs),
      rpoIncidentsOpened: rpoIncidents.length,
      meanCycleMs: Math.round(mean(cycleMs)),
      maxCycleMs: cycleMs.length ? Math.max(...cycleMs) : null,
      meanBytesSentPerCycle: Math.round(mean(sentBytes)),
      bytesWrittenByGuest: written,
      guestMiBPerSecond: Number((written / MiB / measured).toFixed(3)),
      failures: final.failures,
      measuredSeconds: Math.round(measured),
      measuredAt: new Date().toISOString(),
    };
  } finally {
    await sites.destroy().catch(() => undefined);
  }
}

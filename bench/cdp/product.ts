/**
 * Continuous replication's product figures (issue 22), through the product: two real site
 * servers in their network namespaces (test/harness/two-sites.ts), the test guest writing its
 * log (4 KiB records, each durable before the next) at a set rate, `replicate enable
 * --continuous --checkpoint I` through the CLI, the journal shipped over the site link.
 *
 * - cdp_rpo_p99_seconds: about every second, at a random phase, the replication status at
 *   site-a (the API's, from one sampler process in site-a's namespace: lag-sampler.ts); the lag is now minus the newest checkpoint site-b holds (journal.shippedAt). p99 and max
 *   over the run. (A fixed 1 s period would lock onto a 1 s checkpoint clock and see one point
 *   of the lag's sawtooth: the figures before this were measured so, and were too low.)
 * - cdp_journal_bytes_per_written_byte: the journal's bytes at site-b (its segments, headers
 *   and checkpoints included) over the bytes the guest acknowledged meanwhile.
 * - any_point_accuracy_seconds: 20 instants T of the window, each read back at site-b
 *   (`replicate verify --at T`): how far from T the disk was cut, located by its last record's
 *   time on the guest's clock with that clock's offset from the host's taken out (the median,
 *   over the instants, of checkpoint minus last record).
 * The guest's achieved rate is recorded beside each: a TCG guest may not reach the one asked.
 */
import { spawn } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../test/harness/two-sites.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { AckSamples } from '../../test/harness/continuous-guest.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import { median } from '../bench-common.js';
import { GuestLoad, LOAD_REGION_MIB } from './guest-load.js';

const RECORD_BYTES = 4096;

export interface ProductRun {
  recordsPerSecond: number;
  seconds: number;
  achievedBytesPerSecond: number;
  lagsMs: number[];
  journalBytes: number;
  writtenBytes: number;
  accuracyMs: number[];
  journalBytesBefore: number;
}

/**
 * The lag (now minus the newest checkpoint site-b holds) about every second for `ms`, from one
 * sampler process inside site-a's namespace (lag-sampler.ts).
 */
async function sampleLags(sites: TwoSites, vm: string, ms: number): Promise<number[]> {
  const script = join(repoRoot, 'dist', 'bench', 'cdp', 'lag-sampler.js');
  const [file, args] = sites.a.netns!.wrap(process.execPath, [script, sites.a.dataDir, vm]);
  const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lags: number[] = [];
  let rest = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      const [now, shipped] = line.split(' ').map(Number);
      if (shipped! >= 0) lags.push(now! - shipped!);
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  await Promise.race([new Promise((r) => setTimeout(r, ms)), exited]);
  child.stdin.end();
  const code = await exited;
  if (code !== 0) throw new Error(`the lag sampler ended with ${code}`);
  return lags;
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? await dirBytes(p) : (await stat(p)).size;
  }
  return n;
}

export async function productRun(o: {
  recordsPerSecond: number;
  seconds: number;
  /** More guest writes beside the log, in MiB/s, on a second disk (guest-load.ts); none when absent. */
  extraMiBPerSecond?: number;
  /** `replicate enable --checkpoint` (1s when absent). */
  checkpoint?: string;
}): Promise<ProductRun> {
  const sites = await TwoSites.create();
  try {
    await sites.pairBothWays();
    const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
    // Room for the whole run's log, and a margin.
    const mib = Math.ceil((o.recordsPerSecond * RECORD_BYTES * (o.seconds + 120)) / 1024 / 1024 / 64) * 64;
    const extra = o.extraMiBPerSecond ?? 0;
    if (extra > 0) await a('disk', 'create', 'load', '--size', `${LOAD_REGION_MIB}M`);
    await a(
      'vm',
      'create',
      'pg',
      '--test-guest',
      '--data-disk',
      `${mib}M`,
      '--writelog-rate',
      String(o.recordsPerSecond),
      ...(extra > 0 ? ['--disk', 'load', '--guest-agent'] : []),
    );
    const vm = await a<{ id: string; serialLog: string }>('vm', 'start', 'pg');
    const acks = new AckSamples(vm.serialLog);
    await sites.a.waitFor('the writer', async () => (await acks.sample()) > 0 || undefined, 180_000);
    await a(
      'replicate',
      'enable',
      'pg',
      '--to',
      'site-b',
      '--continuous',
      '--checkpoint',
      o.checkpoint ?? '1s',
      ...(extra > 0 ? ['--app-checkpoint', 'off'] : []),
    );
    await sites.a.waitFor(
      'the journal streams',
      async () => {
        const j = (await a<ReplicationStatus>('replicate', 'status', 'pg')).journal;
        return j?.state === 'streaming' && j.shippedAt !== null ? j : undefined;
      },
      180_000,
    );
    const replica = (await sites.b.cliJson<{ id: string; vmName: string }[]>('replica', 'list')).find(
      (x) => x.vmName === 'pg',
    )!;
    const journalDir = join(sites.b.dataDir, 'replicas', replica.id, 'journal');
    const load = extra > 0 ? await GuestLoad.start(join(sites.a.dataDir, 'vms', vm.id, 'qga.sock'), extra) : null;
    const startJournal = await dirBytes(journalDir);
    const startAcked = await acks.sample();
    const startLoad = (await load?.written()) ?? 0;
    const started = Date.now();
    const lagsMs = await sampleLags(sites, 'pg', o.seconds * 1000);
    const endAcked = await acks.sample();
    const endLoad = (await load?.written()) ?? 0;
    const ended = Date.now();
    const elapsed = (ended - started) / 1000;
    // Once site-b holds a checkpoint after the last sample, its journal holds every record counted.
    await sites.a.waitFor(
      'the journal caught up',
      async () => {
        const j = (await a<ReplicationStatus>('replicate', 'status', 'pg')).journal;
        return j?.shippedAt && Date.parse(j.shippedAt) > ended ? true : undefined;
      },
      120_000,
    );
    const journalBytes = (await dirBytes(journalDir)) - startJournal;
    const writtenBytes = (endAcked - startAcked) * RECORD_BYTES + (endLoad - startLoad);
    const checkpoints = await a<{ time: string }[]>(
      'replicate',
      'points',
      'pg',
      '--between',
      new Date(started).toISOString(),
      new Date().toISOString(),
    );
    const firstMs = Date.parse(checkpoints[0]!.time);
    const lastMs = Date.parse(checkpoints.at(-1)!.time);
    const cuts: { t: number; cp: number; lastMs: number }[] = [];
    for (let k = 0; k < 20; k++) {
      const t = firstMs + ((lastMs - firstMs) * (k + 0.5)) / 20;
      const v = await a<{ point: { time: string }; report: { lastTime: string | null } }>(
        'replicate',
        'verify',
        'pg',
        '--at',
        new Date(t).toISOString(),
      );
      if (v.report.lastTime !== null)
        cuts.push({ t, cp: Date.parse(v.point.time), lastMs: Date.parse(v.report.lastTime) });
    }
    // The guest's clock against the host's: at a checkpoint the disk is cut, and its last record
    // was written a record's spacing before; the median over the instants.
    const offset = median(cuts.map((c) => c.cp - c.lastMs));
    return {
      recordsPerSecond: o.recordsPerSecond,
      seconds: Math.round(elapsed),
      achievedBytesPerSecond: Math.round(writtenBytes / elapsed),
      lagsMs,
      journalBytes,
      writtenBytes,
      accuracyMs: cuts.map((c) => Math.abs(c.t - (c.lastMs + offset))),
      journalBytesBefore: startJournal,
    };
  } finally {
    await sites.destroy().catch(() => undefined);
  }
}

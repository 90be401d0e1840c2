import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pairedSitesForFile } from '../../harness/two-sites.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { logPrefixOf } from '../../harness/writelog-prefix.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import { AckSamples, verifyInstant, waitStreaming } from '../../harness/continuous-guest.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import { queryImageInfo } from '../../../src/qemu/qemu-img-read.js';
import type { JournalForecast } from '../../../src/cdp/journal-forecast.js';
import { parseSerialAcks } from '../../../src/guest/writelog-verifier.js';

/*
 * Continuous replication through the product (issue 22): two real sites in their own network
 * namespaces, the test guest writing 200 records a second at site-a, `replicate enable
 * --continuous` journalling every write to site-b over the site link. The ground truth is the
 * guest's write log, read back at site-b at instants within the window.
 */
interface Vm {
  serialLog: string;
  lastHeartbeatAt: string | null;
}
interface Checkpoint {
  time: string;
  seq: number;
  applicationConsistent: boolean;
}
interface Incident {
  kind: string;
  clearedAt: string | null;
}

const sites = pairedSitesForFile();

const a = <T>(...args: string[]) => sites().cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites().cliJson<T>('b', ...args);

/** Runs the plan in `mode` at site-b to its end; returns the run. */
async function runPlan(mode: string, ...args: string[]): Promise<PlanRun> {
  const r = await sites().cli('b', 'plan', 'run', 'cdp-plan', '--mode', mode, ...args);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const id = /^run (run-\S+):/m.exec(r.stdout)?.[1];
  assert.ok(id, `the CLI names the run: ${r.stdout}`);
  return b<PlanRun>('plan', 'report', id, '--json');
}

test('bad continuous settings are refused and change nothing', async () => {
  await a('vm', 'create', 'quiet', '--test-guest', '--data-disk', '16M');
  for (const [args, code] of [
    [['--continuous', '--checkpoint', '10ms'], 'OUT_OF_RANGE'],
    [['--continuous', '--checkpoint', 'soon'], 'OUT_OF_RANGE'],
    [['--continuous', '--journal', '31d'], 'OUT_OF_RANGE'],
    [['--rpo', '30s', '--journal', '4h'], 'INVALID_INPUT'],
    // Application-consistent checkpoints freeze through a guest agent, which this VM lacks.
    [['--continuous', '--app-checkpoint', '15m'], 'INVALID_INPUT'],
  ] as const) {
    const r = await sites().cli('a', 'replicate', 'enable', 'quiet', '--to', 'site-b', ...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, new RegExp(`\\[${code}\\]`), r.stderr);
  }
  assert.deepEqual(await a('replicate', 'status'), []);
});

test('a continuous replica at site-b holds the guest as of any checkpoint, each a gap-free log with everything acknowledged before it', async () => {
  await a('vm', 'create', 'cdp', '--test-guest', '--data-disk', '64M', '--writelog-rate', '200', '--guest-agent');
  const vm = await a<Vm>('vm', 'start', 'cdp');
  await sites().a.waitFor('heartbeat', async () => (await a<Vm>('vm', 'show', 'cdp')).lastHeartbeatAt, 120_000);

  const enabled = await a<ReplicationStatus>(
    'replicate',
    'enable',
    'cdp',
    '--to',
    'site-b',
    '--continuous',
    '--checkpoint',
    '1s',
    '--journal',
    '1h',
    '--app-checkpoint',
    '10s',
  );
  assert.deepEqual(enabled.continuous, { checkpointSeconds: 1, journalSeconds: 3600, appCheckpointSeconds: 10 });

  // What the guest had acknowledged, sampled on the host's clock while the journal streams.
  const acks = new AckSamples(vm.serialLog);
  const streaming = await waitStreaming(sites().a, 'cdp');
  assert.ok(streaming.journal!.basePointId, 'the journal replays over a replica point');
  const from = streaming.journal!.shippedAt!;
  let checkpoints: Checkpoint[] = [];
  await sites().a.waitFor(
    'twenty-five checkpoints at site-b, an application-consistent one among them',
    async () => {
      await acks.sample();
      checkpoints = await a<Checkpoint[]>('replicate', 'points', 'cdp', '--between', from, new Date().toISOString());
      return (checkpoints.length >= 25 && checkpoints.some((c) => c.applicationConsistent)) || undefined;
    },
    180_000,
  );
  const status = await a<ReplicationStatus>('replicate', 'status', 'cdp');
  assert.equal(status.journal?.state, 'streaming', JSON.stringify(status.journal));
  assert.equal(status.journal?.error, null);
  // The RPO is the journal's: its newest point at site-b is seconds old, though no cycle ran since.
  assert.ok(status.lagSeconds !== null && status.lagSeconds < 10, `lag ${status.lagSeconds}s`);
  assert.equal(status.rpoViolated, false);
  // Application-consistent checkpoints every 10 s: the guest frozen through its agent (its
  // fsfreeze hook stops the log writer and says so on the console), then thawed, and the point
  // labelled. The ordinary checkpoints between them stay crash-consistent.
  assert.equal(status.journal?.appCheckpointError, null);
  assert.ok(status.journal?.appCheckpointAt, 'the session took an application-consistent checkpoint');
  const app = checkpoints.filter((c) => c.applicationConsistent);
  assert.ok(app.length < checkpoints.length / 3, `${app.length} of ${checkpoints.length} are application-consistent`);
  const serial = await readFile(vm.serialLog, 'utf8');
  const freezes = serial.match(/mamori-fsfreeze freeze/g)?.length ?? 0;
  assert.ok(freezes >= app.length, `${freezes} freezes for ${app.length} labelled checkpoints`);
  await sites().a.waitFor(
    'every freeze thawed',
    async () =>
      ((await readFile(vm.serialLog, 'utf8')).match(/mamori-fsfreeze thaw/g)?.length ?? 0) >=
        ((await readFile(vm.serialLog, 'utf8')).match(/mamori-fsfreeze freeze/g)?.length ?? 0) || undefined,
    30_000,
  );
  const appRead = await verifyInstant(sites().a, 'cdp', app[0]!.time, acks);
  assert.equal(appRead.point.time, app[0]!.time, 'an application-consistent checkpoint reads back as itself');

  // Twenty instants spread over the window, each between two checkpoints: each rounds down to
  // a listed checkpoint within an interval or two, a gap-free log with everything acknowledged
  // before it (verifyInstant).
  const firstMs = Date.parse(checkpoints[0]!.time);
  const lastMs = Date.parse(checkpoints.at(-1)!.time);
  let previous = 0;
  for (let k = 0; k < 20; k++) {
    const at = new Date(firstMs + ((lastMs - firstMs) * (k + 0.5)) / 20).toISOString();
    const v = await verifyInstant(sites().a, 'cdp', at, acks);
    assert.ok(
      checkpoints.some((c) => c.time === v.point.time),
      `${v.point.time} is a listed checkpoint`,
    );
    assert.ok(v.report.gapFreePrefix >= previous, 'later instants hold no fewer records');
    previous = v.report.gapFreePrefix;
  }
  assert.ok(previous > 0, 'the log reached the journal');

  // A test recovery at an instant of the window: the plan run rounds it down to the checkpoint,
  // copies nothing (the test VM boots from site-b's export of that instant), and the test VM
  // holds the log up to that checkpoint, record by record as the protected guest wrote it.
  await a('group', 'create', 'cg', '--vm', 'cdp');
  await b('network', 'create', 'testnet', '--isolated');
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
  const work = await mkdtemp(join(tmpdir(), 'mamori-cdp-plan-'));
  after(() => rm(work, { recursive: true, force: true }));
  const plan = join(work, 'plan.yaml');
  await writeFile(
    plan,
    'name: cdp-plan\nprotectionGroups: [cg]\nvms:\n  cdp:\n    priority: 1\n    waitHeartbeat: 240s\n',
  );
  await b('plan', 'apply', plan);
  const pickedMs = firstMs + (lastMs - firstMs) / 3;
  const run = await runPlan('test', '--point', new Date(pickedMs).toISOString());
  assert.equal(run.result, 'success', JSON.stringify(run.steps.map((x) => `${x.state} ${x.label} ${x.message ?? ''}`)));
  const out = run.vms['cdp']!;
  assert.match(out.point!.id, /^journal@/, 'recovered from a point in time of the journal');
  const cpMs = Date.parse(out.point!.time);
  assert.ok(
    cpMs <= pickedMs && pickedMs - cpMs <= 2_500,
    `asked ${new Date(pickedMs).toISOString()}, got ${out.point!.time}`,
  );
  const resumed = await writerResumedAfter(sites().b, 'cdp');
  assert.ok(
    resumed >= acks.ackedBy(cpMs),
    `the test copy resumed after ${resumed}; ${acks.ackedBy(cpMs)} were acknowledged before its instant`,
  );
  const protectedVm = await a<VmView>('vm', 'show', 'cdp');
  const testVm = (await b<VmView[]>('vm', 'list')).find((x) => x.id === out.recoveredVmId)!;
  const held = await logPrefixOf(protectedVm.disks[0]!.path, testVm.disks[0]!.path, resumed);
  assert.deepEqual(held.mismatched, [], 'no record up to the instant differs from the protected one');
  assert.ok(held.prefix >= resumed, `the test copy holds 1..${held.prefix}, its writer resumed after ${resumed}`);
  // Instant: each disk is an overlay on the instant's export, nothing was copied, and a test
  // copy stays so for its life.
  for (const d of testVm.disks.filter((x) => x.format === 'qcow2')) {
    const info = await queryImageInfo(d.path, { format: 'qcow2', forceShare: true });
    assert.match(info.backingFile ?? '', /"driver":"nbd"/, `${d.name} reads its point in time through the export`);
  }
  assert.equal((await pitFolders()).length, 1, 'one export serves the instant');
  // A crash of site-b's server: the test copy's reads of its export wait (each new cluster of
  // its log is copied on write from below), the next start serves the export again where the
  // overlays say, and the guest goes on: it acknowledges records written after the restart.
  const lastAck = async (): Promise<number> =>
    parseSerialAcks(await readFile(testVm.serialLog, 'utf8').catch(() => '')).at(-1) ?? 0;
  await sites().b.crashServer();
  await sites().b.start();
  const ackAtRestart = await lastAck();
  await sites().b.waitFor(
    'a record the test copy acknowledges after the restart',
    async () => ((await lastAck()) > ackAtRestart + 200 ? true : undefined),
    120_000,
  );
  const clean = await runPlan('cleanup');
  assert.equal(clean.result, 'success');
  assert.deepEqual(await b<VmView[]>('vm', 'list'), []);
  assert.deepEqual(await pitFolders(), [], 'the export closed with its last VM');

  // The journal's forecast at site-b: once it covers a minute, the rate it grows at is the
  // guest's writes (each 4 KiB record once, with the journal's headers), against a window of
  // the hour asked, which fits in this machine's free space.
  const replicaId = (await b<{ id: string; vmName: string }[]>('replica', 'list')).find((r) => r.vmName === 'cdp')!.id;
  const forecast = await sites().b.waitFor(
    'a forecast of the journal',
    async () => {
      await acks.sample();
      const j = (await b<{ journal: JournalForecast | null }>('replica', 'show', replicaId)).journal;
      return j?.bytesPerSecond != null ? j : undefined;
    },
    180_000,
  );
  const nowMs = Date.now();
  const guestRate = ((acks.ackedBy(nowMs) - acks.ackedBy(firstMs)) * 4096) / ((nowMs - firstMs) / 1000);
  assert.ok(
    forecast.bytesPerSecond! > guestRate * 0.6 && forecast.bytesPerSecond! < guestRate * 1.6,
    `the journal grows ${forecast.bytesPerSecond} B/s, the guest wrote ${Math.round(guestRate)} B/s`,
  );
  assert.equal(forecast.windowSeconds, 3600);
  assert.equal(forecast.fits, true);
  // A window and a quarter (epochs leave whole) at that rate; the rate shown is rounded.
  assert.ok(
    Math.abs(forecast.neededBytes! - forecast.bytesPerSecond! * 3600 * 1.25) <= 3600,
    'the window at that rate',
  );
  // No break, no incident.
  const incidents = (await a<Incident[]>('events')).filter((i) => i.kind === 'replication.journal-broken');
  assert.deepEqual(incidents, []);

  // Pausing ends the session (no incident), and resuming starts a new one over a new point.
  const paused = await a<ReplicationStatus>('replicate', 'pause', 'cdp');
  assert.equal(paused.journal, null);
  await a('replicate', 'resume', 'cdp');
  const again = await waitStreaming(sites().a, 'cdp', { notBase: streaming.journal!.basePointId! });
  assert.notEqual(again.journal!.basePointId, streaming.journal!.basePointId, 'over a newer point');
  await acks.sample();
  const v = await verifyInstant(sites().a, 'cdp', new Date().toISOString(), acks, 4_000);
  assert.ok(v.report.gapFreePrefix >= previous, 'the new journal holds no less than the old one did');
  // The first session's points in time stay: an instant in it reads as before, over its own base.
  const middle = checkpoints[Math.floor(checkpoints.length / 2)]!;
  const old = await verifyInstant(sites().a, 'cdp', middle.time, acks, 0);
  assert.equal(old.point.time, middle.time);
  const listed = await a<Checkpoint[]>('replicate', 'points', 'cdp', '--between', from, new Date().toISOString());
  assert.ok(
    checkpoints.every((c) => listed.some((l) => l.time === c.time)),
    "the first session's checkpoints are still listed",
  );
  await a('vm', 'stop', 'cdp');
  await sites().a.waitFor(
    'no session for a stopped VM',
    async () => (await a<ReplicationStatus>('replicate', 'status', 'cdp')).journal === null || undefined,
    30_000,
  );
  // A stop is no break.
  assert.deepEqual(
    (await a<Incident[]>('events')).filter((i) => i.kind === 'replication.journal-broken'),
    [],
  );

  // A disaster recovery at an instant of the first session: the VM boots at once from the
  // export, then moves onto its own overlay while it runs (block-stream), and the export closes.
  // Its disk then stands alone, holding the log up to the instant.
  const drAt = Date.parse(checkpoints[Math.floor((checkpoints.length * 2) / 3)]!.time) + 300;
  const dr = await runPlan('disaster', '--point', new Date(drAt).toISOString());
  assert.equal(dr.result, 'success', JSON.stringify(dr.steps.map((x) => `${x.state} ${x.label} ${x.message ?? ''}`)));
  assert.match(dr.vms['cdp']!.point!.id, /^journal@/);
  const drCpMs = Date.parse(dr.vms['cdp']!.point!.time);
  assert.ok(drCpMs <= drAt && drAt - drCpMs <= 2_500, `asked ${new Date(drAt).toISOString()}, got ${drCpMs}`);
  const recovered = await b<VmView>('vm', 'show', 'cdp');
  await sites().b.waitFor(
    'the recovered VM on its own disks, its export closed',
    async () => {
      const info = await queryImageInfo(recovered.disks[0]!.path, { format: 'qcow2', forceShare: true });
      return (info.backingFile === null && (await pitFolders()).length === 0) || undefined;
    },
    300_000,
  );
  assert.equal((await b<VmView>('vm', 'show', 'cdp')).state, 'running', 'it ran all along');
  const drResumed = await writerResumedAfter(sites().b, 'cdp');
  assert.ok(drResumed >= acks.ackedBy(drCpMs), `resumed after ${drResumed}, ${acks.ackedBy(drCpMs)} acknowledged`);
  const drHeld = await logPrefixOf(protectedVm.disks[0]!.path, recovered.disks[0]!.path, drResumed);
  assert.deepEqual(drHeld.mismatched, []);
  assert.ok(drHeld.prefix >= drResumed, `the recovered VM holds 1..${drHeld.prefix}, resumed after ${drResumed}`);

  // Reprotect: the recovered VM replicates back to site-a as it was protected, continuously
  // (the same checkpoints, window and freezes), its journal streaming at site-a's replica.
  const rp = await runPlan('reprotect');
  assert.equal(rp.result, 'success', JSON.stringify(rp.steps.map((x) => `${x.state} ${x.label} ${x.message ?? ''}`)));
  const back = await b<ReplicationStatus>('replicate', 'status', 'cdp');
  assert.equal(back.to, 'site-a');
  assert.deepEqual(back.continuous, { checkpointSeconds: 1, journalSeconds: 3600, appCheckpointSeconds: 10 });
  const backStreaming = await waitStreaming(sites().b, 'cdp');
  assert.ok(backStreaming.journal!.shippedAt, 'site-a holds the journal of the VM that now runs at site-b');

  // A planned failover back to site-a at a point in time (a rewind on purpose, as before a bad
  // change): the VM is shut down at site-b and synced, and site-a recovers it at the checkpoint
  // at or before the time asked, from its journal. Its log ends there.
  const backAcks = new AckSamples(recovered.serialLog);
  const backFrom = backStreaming.journal!.shippedAt!;
  const backPoints = await sites().b.waitFor(
    'six checkpoints of the reverse journal at site-a',
    async () => {
      await backAcks.sample();
      const l = await b<Checkpoint[]>('replicate', 'points', 'cdp', '--between', backFrom, new Date().toISOString());
      return l.length >= 6 ? l : undefined;
    },
    120_000,
  );
  await a('network', 'create', 'testnet', '--isolated');
  await a('mapping', 'set', '--peer', 'site-b', 'network', 'user', 'user', '--test', 'testnet');
  await a('mapping', 'set', '--peer', 'site-b', 'pool', 'default', 'default');
  const rewindTo = Date.parse(backPoints[3]!.time) + 300;
  const fo = await sites().cli(
    'b',
    'vm',
    'failover',
    'cdp',
    '--planned',
    '--point',
    new Date(rewindTo).toISOString(),
    '--no-reverse',
    '--json',
  );
  assert.equal(fo.code, 0, fo.stderr + fo.stdout);
  const foRun = (JSON.parse(fo.stdout) as { context: { failover: { run: string } } }).context.failover.run;
  const atA = await a<PlanRun>('plan', 'report', foRun, '--json');
  assert.equal(atA.mode, 'planned');
  assert.match(atA.vms['cdp']!.point!.id, /^journal@/, "recovered from site-a's journal");
  const atMs = Date.parse(atA.vms['cdp']!.point!.time);
  assert.ok(atMs <= rewindTo && rewindTo - atMs <= 2_500, `asked ${new Date(rewindTo).toISOString()}, got ${atMs}`);
  const rewound = await a<VmView>('vm', 'show', 'cdp');
  const rewoundResumed = await writerResumedAfter(sites().a, 'cdp');
  assert.ok(rewoundResumed >= backAcks.ackedBy(atMs), 'everything acknowledged before the point is there');
  // Nothing after the point: the writer at site-b went on well past it before the shutdown.
  await backAcks.sample();
  assert.ok(
    backAcks.ackedBy(Date.now()) > rewoundResumed,
    `site-b acknowledged ${backAcks.ackedBy(Date.now())}, the rewound VM resumed after ${rewoundResumed}`,
  );
  const rewoundHeld = await logPrefixOf(recovered.disks[0]!.path, rewound.disks[0]!.path, rewoundResumed);
  assert.deepEqual(rewoundHeld.mismatched, []);
  assert.ok(rewoundHeld.prefix >= rewoundResumed);
  await a('vm', 'stop', 'cdp', '--force');
});

/** The point-in-time exports site-b serves (one folder each). */
async function pitFolders(): Promise<string[]> {
  return readdir(join(sites().b.dataDir, 'pit')).catch((e: NodeJS.ErrnoException) =>
    e.code === 'ENOENT' ? [] : Promise.reject(e),
  );
}

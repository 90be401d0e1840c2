import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pairedSitesForFile } from '../../harness/two-sites.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { logPrefixOf } from '../../harness/writelog-prefix.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import { AckSamples, verifyInstant, waitStreaming } from '../../harness/continuous-guest.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';

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
  ] as const) {
    const r = await sites().cli('a', 'replicate', 'enable', 'quiet', '--to', 'site-b', ...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, new RegExp(`\\[${code}\\]`), r.stderr);
  }
  assert.deepEqual(await a('replicate', 'status'), []);
});

test('a continuous replica at site-b holds the guest as of any checkpoint, each a gap-free log with everything acknowledged before it', async () => {
  await a('vm', 'create', 'cdp', '--test-guest', '--data-disk', '64M', '--writelog-rate', '200');
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
  );
  assert.deepEqual(enabled.continuous, { checkpointSeconds: 1, journalSeconds: 3600 });

  // What the guest had acknowledged, sampled on the host's clock while the journal streams.
  const acks = new AckSamples(vm.serialLog);
  const streaming = await waitStreaming(sites().a, 'cdp');
  assert.ok(streaming.journal!.basePointId, 'the journal replays over a replica point');
  const from = streaming.journal!.shippedAt!;
  let checkpoints: Checkpoint[] = [];
  await sites().a.waitFor(
    'twenty-five checkpoints at site-b',
    async () => {
      await acks.sample();
      checkpoints = await a<Checkpoint[]>('replicate', 'points', 'cdp', '--between', from, new Date().toISOString());
      return checkpoints.length >= 25 || undefined;
    },
    180_000,
  );
  const status = await a<ReplicationStatus>('replicate', 'status', 'cdp');
  assert.equal(status.journal?.state, 'streaming', JSON.stringify(status.journal));
  assert.equal(status.journal?.error, null);
  // The RPO is the journal's: its newest point at site-b is seconds old, though no cycle ran since.
  assert.ok(status.lagSeconds !== null && status.lagSeconds < 10, `lag ${status.lagSeconds}s`);
  assert.equal(status.rpoViolated, false);

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
  // copies nothing but the journal's writes over the base, and the test VM boots holding the
  // log up to that checkpoint, record by record as the protected guest wrote it.
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
  const clean = await runPlan('cleanup');
  assert.equal(clean.result, 'success');
  assert.deepEqual(await b<VmView[]>('vm', 'list'), []);
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
});

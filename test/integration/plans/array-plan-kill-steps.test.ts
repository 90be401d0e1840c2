import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { ZfsFuse, type TestPool } from '../../harness/zfs-fuse.js';
import { ChainedCuts, bothClean, explain, noDuplicate } from '../../harness/job-kill-plans.js';
import { runProcess } from '../../../src/core/run-process.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { POINTS_KEPT, isPoint } from '../../../src/adapters/zfs/zfs-points.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { ProtectionGroupView } from '../../../src/plans/protection-groups.js';
import type { VmView } from '../../../src/vms/vm-service.js';

/*
 * Kill -9 at the array steps of a plan run (issue 20, item 3): the steps of an array-based
 * protection group, which drive the storage arrays' adapters (here the bundled ZFS adapter on
 * a zfs-fuse pool per site) instead of mamori's own replication. A plan run is a job of kind
 * `plan-run`, policy resume: a cut run ends interrupted and `plan resume` finishes it. Site-b
 * (the recovery site, which runs the plan) is cut at `job:plan-run:STEP`, passed once the
 * step's work is done and before the run journal records it; it starts again armed only with
 * the next cut's point (see plan-run-kill-steps.test.ts, whose chaining this follows), so each
 * resume re-runs the step cut before it: a second clone, promote or reverse would show here.
 * Cut, in order:
 *   test run:      array-test-start, recover, power-on
 *   cleanup run:   array-test-stop (after its cleanup-vm); then a test run again, uncut
 *   planned run:   array-test-stop (the test copy that run left), array-prepare-failover (its
 *                  work is site-a's, asked through site-a's API), array-failover
 *   reprotect run: array-prepare-reverse (site-a's, through its API), array-reverse
 * The plan protects the one array-based group alone: its host-based steps are cut by
 * plan-run-kill-steps.test.ts.
 * Checked after every cut: the run and its job interrupted with JOB_INTERRUPTED, no VM twice
 * at either site, no file or runtime folder no row names and no QEMU no VM owns, and on the
 * arrays: no clone but the test copy the cut run recorded (its origin the run's point), no
 * snapshot but the adapter's points, and of those no more than its retention keeps (the
 * newest POINTS_KEPT) beyond the ones a recorded point or a test copy's origin holds; the
 * datasets' roles (which side is primary) those the step leaves. Then `plan resume` ends the
 * run succeeded; after the planned run the recovered VM's disk holds every record the guest
 * acknowledged before its shutdown.
 */
let sites: TwoSites;
let zfs: ZfsFuse;
let poolA: TestPool;
let poolB: TestPool;
let work: string;
const VM = 'web';
/** The name of the VM's disk file on the array's dataset (the same at both sites). */
let diskFile: string;
const PLAN = 'store-plan';
const GROUP = 'store';
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-arraykill-'));
  zfs = await ZfsFuse.acquire();
  poolA = await zfs.createPool('a', 512);
  poolB = await zfs.createPool('b', 512);
  await zfsCmd('create', `${poolA.name}/vmstore`);
  // Replication starts with the source naming its peer (docs/adapters.md, "Starting replication").
  await zfsCmd('set', `mamori:peer=${poolB.name}/vmstore`, `${poolA.name}/vmstore`);
  sites = await TwoSites.create({ hostMounts: true });
  cuts = new ChainedCuts(sites);
  await sites.pairBothWays();
  for (const [s, name, pool] of [
    ['a', 'store-a', poolA],
    ['b', 'store-b', poolB],
  ] as const)
    await sites.cliJson(
      s,
      'array',
      'add',
      name,
      '--adapter',
      'zfs',
      '--connection',
      `pools=${pool.name}`,
      '--connection',
      'peerCommand=[]',
    );
  await a('disk', 'create', 'web-data', '--size', '32M', '--array', 'store-a', '--device', 'vmstore');
  await a('vm', 'create', VM, '--test-guest', '--disk', 'web-data', '--network', 'none', '--writelog-rate', '10');
  diskFile = basename((await a<VmView>('vm', 'show', VM)).disks[0]!.path);
  await a('vm', 'start', VM);
  await sites.a.waitFor(`${VM} heartbeat`, async () => (await a<VmView>('vm', 'show', VM)).lastHeartbeatAt, 180_000);
  await a('group', 'create', GROUP, '--array', 'store-a', '--device', 'vmstore', '--to', 'site-b', '--rpo', '1h');
  // A sync queues behind the scheduled first one: a point at site-b before the first run.
  await a('group', 'sync', GROUP);
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
  const file = join(work, 'plan.yaml');
  await writeFile(
    file,
    `name: ${PLAN}\nprotectionGroups: [${GROUP}]\nshutdownTimeout: 60s\nvms:\n  ${VM}:\n    waitHeartbeat: 240s\n`,
  );
  await b('plan', 'apply', file);
});

after(async () => {
  await sites?.destroy();
  await zfs?.release();
  if (work) await rm(work, { recursive: true, force: true });
});

async function zfsCmd(...args: string[]): Promise<string> {
  return (await runProcess('zfs', args, { timeoutMs: 120_000 })).stdout.trim();
}

/** Each site's vmstore role, a then b: which side is primary. */
type Roles = [string, string];

/**
 * What is on the arrays, checked against what owns it. Clones: only the test copy at site-b,
 * only when `clone` (the cut run recorded it: its origin must be the run's point).
 * Snapshots: only the adapter's points (the test's own `zfs` calls make none); beyond the
 * newest POINTS_KEPT of a dataset (the adapter's retention) only the run's recorded point or
 * a clone's origin. Roles as `roles`. Files on the datasets: only the VM's disk.
 */
async function arraysClean(run: PlanRun, roles: Roles, clone: boolean): Promise<void> {
  const recorded = run.arrays[GROUP]?.point;
  const origins = new Set<string>();
  for (const pool of [poolA, poolB]) {
    const rows = (await zfsCmd('list', '-H', '-t', 'filesystem', '-o', 'name,origin', '-r', pool.name))
      .split('\n')
      .map((l) => l.split('\t') as [string, string]);
    const clones = rows.filter(([, o]) => o !== '-');
    const want = clone && pool === poolB ? [`${poolB.name}/vmstore-mamori-test`] : [];
    assert.deepEqual(
      clones.map(([n]) => n),
      want,
      `${pool.name}: clones ${JSON.stringify(clones)}; the run records ${JSON.stringify(run.arrays[GROUP])}`,
    );
    for (const [, o] of clones) {
      origins.add(o);
      assert.equal(o, `${poolB.name}/vmstore@${recorded}`, 'the test copy is of the point the run recorded');
    }
    assert.deepEqual(
      rows.map(([n]) => n).filter((n) => n !== pool.name && !want.includes(n)),
      [`${pool.name}/vmstore`],
      `${pool.name}: no dataset but vmstore (and the recorded test copy)`,
    );
  }
  for (const pool of [poolA, poolB]) {
    const snaps = (await zfsCmd('list', '-H', '-t', 'snapshot', '-o', 'name', '-s', 'creation', '-r', pool.name))
      .split('\n')
      .filter(Boolean);
    const names = snaps.map((s) => s.slice(s.indexOf('@') + 1));
    assert.deepEqual(
      names.filter((n) => !isPoint(n)),
      [],
      `${pool.name}: no snapshot but the adapter's points: ${snaps.join(' ')}`,
    );
    const beyond = snaps.slice(0, Math.max(0, snaps.length - POINTS_KEPT));
    assert.deepEqual(
      beyond.filter((s) => !origins.has(s) && !s.endsWith(`@${recorded}`)),
      [],
      `${pool.name}: points beyond the adapter's ${POINTS_KEPT} are owned by a test copy or the run's point: ${snaps.join(' ')}`,
    );
  }
  assert.deepEqual(
    [
      await zfsCmd('get', '-H', '-o', 'value', 'mamori:role', `${poolA.name}/vmstore`),
      await zfsCmd('get', '-H', '-o', 'value', 'mamori:role', `${poolB.name}/vmstore`),
    ],
    roles,
    'the vmstore roles at site-a, site-b',
  );
  // The datasets hold the VM's disk and nothing more (a cut leaves no half-made file there).
  for (const pool of [poolA, poolB]) {
    const entries = await readdir(pool.mountpoint, { recursive: true, withFileTypes: true }).catch(() => []);
    const files = entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
    assert.deepEqual(
      files.filter((f) => basename(f) !== diskFile),
      [],
      `${pool.name}: no file but the VM's disk ${diskFile}`,
    );
  }
}

/** Site-b's chained cuts (it runs the plans). */
let cuts: ChainedCuts;

interface Expect {
  /** web VMs at site-b and at site-a after the cut. */
  vms: [number, number];
  roles: Roles;
  /** Whether the test copy stands (recorded by the run). */
  clone: boolean;
  next?: string;
}

/**
 * Cuts site-b at `job:plan-run:STEP` under `args`, starts it again (armed only with the next
 * cut's point, which nothing passes before that cut's resume) and checks what the cut left.
 */
async function cut(step: string, args: string[], want: Expect): Promise<PlanRun> {
  const run = await cuts.cut(step, args, want.next);
  assert.ok(
    run.steps.find((s) => s.kind === step && s.state === 'running'),
    `the ${step} step is the one cut: ${explain(run)}`,
  );
  await noDuplicate(sites, VM, ...want.vms);
  await bothClean(sites);
  await arraysClean(run, want.roles, want.clone);
  return run;
}

async function resumeToEnd(runId: string): Promise<PlanRun> {
  const r = await sites.cli('b', 'plan', 'resume', runId);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const run = await b<PlanRun>('plan', 'report', runId, '--json');
  assert.equal(run.state, 'done', explain(run));
  assert.equal(run.result, 'success', explain(run));
  assert.equal((await b<Job>('job', 'show', runId)).state, 'succeeded');
  return run;
}

/** What a step said when the resume ran it again (its final message). */
function said(run: PlanRun, kind: string): string {
  const s = run.steps.find((x) => x.kind === kind);
  return `${s?.state} ${s?.message ?? ''}`;
}

const FORWARD: Roles = ['source', 'target'];

test('a test run cut after array-test-start, recover and power-on resumes to one test VM on one test copy', async (t) => {
  const run = await cut('array-test-start', ['plan', 'run', PLAN, '--mode', 'test'], {
    vms: [0, 1],
    roles: FORWARD,
    clone: true,
    next: 'recover',
  });
  // Each resume re-runs the step cut before: the test copy made is found, not made again.
  await cut('recover', ['plan', 'resume', run.id], { vms: [1, 1], roles: FORWARD, clone: true, next: 'power-on' });
  await cut('power-on', ['plan', 'resume', run.id], { vms: [1, 1], roles: FORWARD, clone: true });
  const done = await resumeToEnd(run.id);
  t.diagnostic(`resumed array-test-start: ${said(done, 'array-test-start')}`);
  const testVm = await b<VmView>('vm', 'show', VM);
  assert.equal(testVm.state, 'running');
  assert.equal(testVm.id, done.vms[VM]!.recoveredVmId);
  assert.ok(testVm.disks[0]!.path.startsWith(`${done.arrays[GROUP]!.paths['vmstore']!}/`), testVm.disks[0]!.path);
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'running', 'a test leaves the protected VM running');
  await noDuplicate(sites, VM, 1, 1);
  await bothClean(sites);
  await arraysClean(done, FORWARD, true);
});

test('a cleanup run cut after array-test-stop resumes to no test VM and no test copy; a test then runs again', async (t) => {
  const run = await cut('array-test-stop', ['plan', 'run', PLAN, '--mode', 'cleanup'], {
    vms: [0, 1],
    roles: FORWARD,
    clone: false,
  });
  // Its resume removes the test copies again: there are none, and that is no failure.
  const done = await resumeToEnd(run.id);
  t.diagnostic(`resumed array-test-stop: ${said(done, 'array-test-stop')}`);
  await noDuplicate(sites, VM, 0, 1);
  await bothClean(sites);
  await arraysClean(done, FORWARD, false);

  // From the state the cuts left, a test again, uncut; its VM and test copy are left for the
  // planned run to clean up first.
  const again = await sites.cli('b', 'plan', 'run', PLAN, '--mode', 'test');
  assert.equal(again.code, 0, again.stderr + again.stdout);
  assert.equal((await b<VmView>('vm', 'show', VM)).state, 'running');
  await noDuplicate(sites, VM, 1, 1);
});

test('a planned run cut after array-test-stop, array-prepare-failover and array-failover resumes to zero loss', async (t) => {
  const source = await a<VmView>('vm', 'show', VM);
  // The test VM left standing goes first (cleanup-vm), then its test copy: cut there.
  const run = await cut('array-test-stop', ['plan', 'run', PLAN, '--mode', 'planned'], {
    vms: [0, 1],
    roles: FORWARD,
    clone: false,
    next: 'array-prepare-failover',
  });
  // site-a's source is read-only and its last point sent: still the source until site-b promotes.
  await cut('array-prepare-failover', ['plan', 'resume', run.id], {
    vms: [0, 1],
    roles: FORWARD,
    clone: false,
    next: 'array-failover',
  });
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'stopped', 'the shutdown step stopped it at site-a');
  const acked = Math.max(...parseSerialAcks(await readFile(source.serialLog, 'utf8')));
  // Its resume asks site-a again: a second last point, not a second failover.
  await cut('array-failover', ['plan', 'resume', run.id], {
    vms: [0, 1],
    roles: ['source', 'failedOver'],
    clone: false,
  });
  const done = await resumeToEnd(run.id);
  for (const k of ['array-test-stop', 'array-prepare-failover', 'array-failover'])
    t.diagnostic(`resumed ${k}: ${said(done, k)}`);
  const there = await b<VmView>('vm', 'show', VM);
  assert.equal(there.state, 'running');
  assert.equal(there.id, source.id, 'a failover keeps the VM identity');
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'stopped');
  assert.deepEqual([done.vms[VM]!.dataLoss?.atLeastSec, done.vms[VM]!.dataLoss?.atMostSec], [0, 0]);
  const resumed = await writerResumedAfter(sites.b, VM);
  assert.ok(resumed >= acked, `site-b's log goes on after ${resumed}; site-a's guest acknowledged ${acked}`);
  await noDuplicate(sites, VM, 1, 1);
  await bothClean(sites);
  await arraysClean(done, ['source', 'failedOver'], false);
});

test('a reprotect cut after array-prepare-reverse and array-reverse resumes to site-b protecting the group', async (t) => {
  // prepare-reverse: site-a's dataset becomes a target at the common point; its superseded VM goes.
  const run = await cut('array-prepare-reverse', ['plan', 'run', PLAN, '--mode', 'reprotect'], {
    vms: [1, 0],
    roles: ['target', 'failedOver'],
    clone: false,
    next: 'array-reverse',
  });
  // Its resume asks site-a again (the group there is gone: nothing to do), then reverses.
  await cut('array-reverse', ['plan', 'resume', run.id], { vms: [1, 0], roles: ['target', 'source'], clone: false });
  const done = await resumeToEnd(run.id);
  for (const k of ['array-prepare-reverse', 'array-reverse']) t.diagnostic(`resumed ${k}: ${said(done, k)}`);
  // The restart after the cut scheduled the group's first sync here at once: the resumed
  // reverse's sync and it ran one after the other, neither failed.
  const sync = await b<ProtectionGroupView>('group', 'show', GROUP);
  assert.equal(sync.array!.sync.failures, 0, sync.array!.sync.lastError ?? '');
  // A scheduled sync may have begun between the group's creation and the cut: the kill cut it
  // too, and its recovery failed it for what it was. Any other failed sync is a fault.
  const failed = await b<Job[]>('job', 'list', '--kind', 'array-sync', '--state', 'failed');
  for (const j of failed)
    assert.match(j.error?.message ?? '', /^the site server stopped during a sync/, JSON.stringify(j));
  await noDuplicate(sites, VM, 1, 0);
  await bothClean(sites);
  await arraysClean(done, ['target', 'source'], false);
  const groups = await b<{ name: string; kind: string; peer: string }[]>('group', 'list');
  assert.deepEqual(
    groups.map((g) => [g.name, g.kind, g.peer]),
    [[GROUP, 'array', 'site-a']],
    'site-b protects the group once',
  );
  // The same sync again, uncut, from the state the cuts left: one more incremental point.
  const again = await b<{ devices: { bytesSent: number }[] }>('group', 'sync', GROUP);
  assert.ok(again.devices[0]!.bytesSent < 16 * 1024 * 1024, `an incremental sync: ${again.devices[0]!.bytesSent}`);
  await arraysClean(done, ['target', 'source'], false);
});

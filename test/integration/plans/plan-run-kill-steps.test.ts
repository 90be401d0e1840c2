import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { protectWritingGuest } from '../../harness/protected-guest.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { ChainedCuts, bothClean, explain, noDuplicate } from '../../harness/job-kill-plans.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';

/*
 * Kill -9 at every step of a plan run (issue 20, item 3). A plan run is a job of kind
 * `plan-run`, policy resume: a run cut by a crash ends interrupted and waits for the
 * operator's `plan resume` (as SRM leaves a cut recovery to the operator). Each run step is a
 * fault point `job:plan-run:STEPKIND`, passed once the step's work is done and before the run
 * journal records it. Site-b (the recovery site, which runs the plans) is cut; its server is
 * started again after each cut (armed only with the next cut's point, which nothing passes
 * before the next resume), checked, then cut again at the next step by `plan resume`, so each
 * resume also re-runs the step cut before it (the step whose re-run could make a second copy).
 * Cut, in order:
 *   test run:     recover, power-on, command
 *   cleanup run:  cleanup-vm
 *   planned run:  cleanup-vm (a test VM left on purpose), shutdown, promote, recover, power-on,
 *                 command
 *   reprotect run: seed-peer, replicate
 *   failback run:  shutdown-local, promote-peer, recover-peer, seed-local, replicate-peer
 * seed-peer, promote-peer, recover-peer and replicate-peer do their work at site-a, asked by
 * site-b through site-a's API: only site-b, which runs the plan, is cut (after site-a answered),
 * and its resume asks site-a again, so site-a's side must be idempotent too. Site-a is not cut.
 * Left out: prompt (it changes nothing: shown again on resume); the array-* steps (they need
 * an array-based group, a zfs-fuse pool per site: array-recovery-plans.test.ts covers those
 * runs).
 * Checked after every cut: the run and its job interrupted (not running, not failed), no VM
 * twice at either site, no replica of the VM receiving twice at a site and no VM replicated
 * twice (a second seed or a replication enabled again by a resume), no file no row names and no
 * QEMU no VM owns, no recovery point lost at either site; then `plan resume` ends the run with
 * success. For the planned run, the recovered VM's disk holds every record the protected guest
 * acknowledged before its shutdown; after the failback, site-a's holds every record site-b's
 * guest acknowledged.
 */
let sites: TwoSites;
let work: string;
/** The protected VM at site-a before the planned run, and the VM it became at site-b. */
let source: VmView;
let there: VmView;
const VM = 'kp';
const PLAN = 'kp-plan';
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

const PLAN_YAML = `name: ${PLAN}
protectionGroups: [kpg]
shutdownTimeout: 60s
vms:
  ${VM}:
    priority: 1
    waitHeartbeat: 240s
steps:
  - after: vm ${VM}
    command: ["/bin/echo", "${VM} is up"]
    timeout: 30s
`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-plankill-'));
  sites = await TwoSites.create();
  cuts = new ChainedCuts(sites);
  await sites.pairBothWays();
  await b('network', 'create', 'testnet', '--isolated');
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
  // 64 MiB of log: 27 minutes at 10 records a second, longer than the whole file runs.
  await protectWritingGuest(sites.a, VM, { to: 'site-b', dataDisk: '64M' });
  await a('group', 'create', 'kpg', '--vm', VM);
  const file = join(work, 'plan.yaml');
  await writeFile(file, PLAN_YAML);
  await b('plan', 'apply', file);
});

after(async () => {
  await sites?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

interface SiteReplica {
  id: string;
  vmName: string;
  state: string;
  points?: { id: string; time: string }[];
}

/**
 * The points both sites hold for the VM's replicas (`site replica point`), checking on the way
 * that a site has at most one replica of it receiving and replicates it at most once: a step
 * re-run by a resume that seeded again or enabled replication again would show here. A retired
 * replica's points count only with `retired`: once the replica a reprotect seeded from it has a
 * point, the seed is absorbed into that replica's base and the retired replica is deleted by
 * design (replica-upkeep.ts), so they are not recovery points to keep.
 */
async function pointIds(retired = false): Promise<string[]> {
  const out: string[] = [];
  for (const s of ['a', 'b'] as const) {
    const rs = (await sites.cliJson<SiteReplica[]>(s, 'replica', 'list')).filter((x) => x.vmName === VM);
    const receiving = rs.filter((r) => r.state === 'receiving');
    assert.ok(receiving.length <= 1, `site-${s}: one replica of ${VM} receiving at most: ${JSON.stringify(rs)}`);
    const reps = (await sites.cliJson<ReplicationStatus[]>(s, 'replicate', 'status')).filter((r) => r.vm === VM);
    assert.ok(reps.length <= 1, `site-${s}: ${VM} replicated once at most: ${JSON.stringify(reps)}`);
    for (const r of rs.filter((x) => retired || x.state !== 'retired'))
      for (const p of r.points ?? []) out.push(`site-${s} ${r.id} ${p.id}`);
  }
  return out;
}

/** Site-b's chained cuts (it runs the plans). */
let cuts: ChainedCuts;

/**
 * Cuts site-b at `job:plan-run:STEP` under `args` (a plan run or resume, followed by the CLI
 * until its server dies), starts it again and checks what the cut left. The start is armed only
 * with `next`, the point of the next cut, which nothing passes before that cut's resume: what
 * the start recovers and what the checks see are an unarmed server's, and a chain of cuts saves
 * a stop and a start each. Returns the run.
 */
async function cut(
  step: string,
  args: string[],
  vmsAtB: number,
  opts: { atA?: number; next?: string } = {},
): Promise<PlanRun> {
  const points = await pointIds();
  const run = await cuts.cut(step, args, opts.next);
  const cutStep = run.steps.find((s) => s.kind === step && s.state === 'running');
  assert.ok(cutStep, `the ${step} step is the one cut: ${explain(run)}`);
  await noDuplicate(sites, VM, vmsAtB, opts.atA ?? 1);
  await bothClean(sites);
  const now = await pointIds(true);
  assert.deepEqual(
    points.filter((p) => !now.includes(p)),
    [],
    `no point lost by the cut at ${step}`,
  );
  return run;
}

async function resumeToEnd(runId: string): Promise<PlanRun> {
  const r = await sites.cli('b', 'plan', 'resume', runId);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const run = await b<PlanRun>('plan', 'report', runId, '--json');
  assert.equal(run.state, 'done', explain(run));
  assert.equal(run.result, 'success', explain(run));
  const job = await b<Job>('job', 'show', runId);
  assert.equal(job.state, 'succeeded');
  return run;
}

test('a test run cut after its recover, power-on and command steps resumes to one running test VM', async () => {
  const run = await cut('recover', ['plan', 'run', PLAN, '--mode', 'test'], 1, { next: 'power-on' });
  // Each resume re-runs the step cut before: recover must find the VM it made, not make another.
  await cut('power-on', ['plan', 'resume', run.id], 1, { next: 'command' });
  await cut('command', ['plan', 'resume', run.id], 1);
  const done = await resumeToEnd(run.id);
  const testVm = await b<VmView>('vm', 'show', VM);
  assert.equal(testVm.state, 'running');
  assert.equal(testVm.id, done.vms[VM]!.recoveredVmId, 'the VM the run reports is the one that runs');
  assert.notEqual(testVm.id, (await a<VmView>('vm', 'show', VM)).id, 'a test copy has its own identity');
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'running', 'a test leaves the protected VM running');
  await noDuplicate(sites, VM, 1, 1);
  await bothClean(sites);
});

test('a cleanup run cut after its cleanup-vm step resumes to nothing left; a test then runs again', async () => {
  const run = await cut('cleanup-vm', ['plan', 'run', PLAN, '--mode', 'cleanup'], 0);
  await resumeToEnd(run.id);
  await noDuplicate(sites, VM, 0, 1);
  await bothClean(sites);

  // From the clean state the cuts left, the same run type again, uncut: it leaves its test VM
  // for the planned run's cleanup step.
  const again = await sites.cli('b', 'plan', 'run', PLAN, '--mode', 'test');
  assert.equal(again.code, 0, again.stderr + again.stdout);
  assert.equal((await b<VmView>('vm', 'show', VM)).state, 'running');
  await noDuplicate(sites, VM, 1, 1);
  await bothClean(sites);
});

test('a planned run cut after each of its steps resumes to zero loss', async () => {
  source = await a<VmView>('vm', 'show', VM);
  const run = await cut('cleanup-vm', ['plan', 'run', PLAN, '--mode', 'planned'], 0, { next: 'shutdown' });
  await cut('shutdown', ['plan', 'resume', run.id], 0, { next: 'promote' });
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'stopped', 'the shutdown step stopped it at site-a');
  // What the guest acknowledged before its shutdown: the ground truth for the planned run.
  const acked = Math.max(...parseSerialAcks(await readFile(source.serialLog, 'utf8')));
  await cut('promote', ['plan', 'resume', run.id], 0, { next: 'recover' });
  await cut('recover', ['plan', 'resume', run.id], 1, { next: 'power-on' });
  await cut('power-on', ['plan', 'resume', run.id], 1, { next: 'command' });
  // Armed next with the reprotect's first point, which the planned run's resume never passes.
  await cut('command', ['plan', 'resume', run.id], 1, { next: 'seed-peer' });
  const done = await resumeToEnd(run.id);

  there = await b<VmView>('vm', 'show', VM);
  assert.equal(there.state, 'running');
  assert.equal(there.id, source.id, 'a failover keeps the VM identity');
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'stopped');
  assert.deepEqual([done.vms[VM]!.dataLoss?.atLeastSec, done.vms[VM]!.dataLoss?.atMostSec], [0, 0]);
  const resumed = await writerResumedAfter(sites.b, VM);
  assert.ok(
    resumed >= acked,
    `the recovered disk's log goes on after ${resumed}; site-a's guest acknowledged ${acked}`,
  );
  await noDuplicate(sites, VM, 1, 1);
  await bothClean(sites);
});

test('a reprotect and a failback cut after each of their steps resume to the VM at home with its whole log', async () => {
  // seed-peer: site-a's superseded copy becomes the seed (its VM row goes: none at site-a).
  const rp = await cut('seed-peer', ['plan', 'run', PLAN, '--mode', 'reprotect'], 1, {
    atA: 0,
    next: 'replicate',
  });
  // Its resume seeds again at site-a: the replica made is found, not made twice.
  await cut('replicate', ['plan', 'resume', rp.id], 1, { atA: 0, next: 'shutdown-local' });
  // Its resume replicates again: the replication enabled is found, a cycle runs.
  await resumeToEnd(rp.id);
  assert.equal((await b<ReplicationStatus>('replicate', 'status', VM)).to, 'site-a', 'reprotected to site-a');

  const fb = await cut('shutdown-local', ['plan', 'run', PLAN, '--mode', 'failback'], 1, {
    atA: 0,
    next: 'promote-peer',
  });
  assert.equal((await b<VmView>('vm', 'show', VM)).state, 'stopped', 'the shutdown-local step stopped it at site-b');
  // What site-b's guest acknowledged before its shutdown: the ground truth for the failback.
  const ackedThere = Math.max(...parseSerialAcks(await readFile(there.serialLog, 'utf8')));
  await cut('promote-peer', ['plan', 'resume', fb.id], 1, { atA: 0, next: 'recover-peer' });
  await cut('recover-peer', ['plan', 'resume', fb.id], 1, { next: 'seed-local' });
  await cut('seed-local', ['plan', 'resume', fb.id], 0, { next: 'replicate-peer' });
  await cut('replicate-peer', ['plan', 'resume', fb.id], 0);
  await resumeToEnd(fb.id);

  const home = await a<VmView>('vm', 'show', VM);
  assert.equal(home.state, 'running');
  assert.equal(home.id, source.id);
  const resumedHome = await writerResumedAfter(sites.a, VM);
  assert.ok(resumedHome >= ackedThere, `site-a's log goes on after ${resumedHome}; site-b's guest acked ${ackedThere}`);
  assert.equal((await a<ReplicationStatus>('replicate', 'status', VM)).to, 'site-b', 'replicated to site-b again');
  await noDuplicate(sites, VM, 0, 1);
  await bothClean(sites);
});

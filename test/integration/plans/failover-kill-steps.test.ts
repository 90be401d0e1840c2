import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { TwoSites } from '../../harness/two-sites.js';
import { assertNoStrayQemu, cutAtStep, orphans } from '../../harness/job-kill-pools.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import type { SiteProcess } from '../../harness/site-process.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { VmFailoverResult } from '../../../src/site-roles/vm-failover.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';

/*
 * Kill -9 at every step of `vm failover` (issue 20, item 3). The job runs at the site asked
 * (the protected one) and only follows the recovery site's runs: step `failover` (the planned
 * run there) and `reprotect` (the run that replicates back), both of which change things, so
 * both are cut. The follower changed nothing of its own, so its recovery rolls nothing back: a
 * cut job with work left ends failed with what the runs did and what is left, with the command
 * (the runs themselves are the recovery site's plan runs, journalled and resumed there); one cut
 * after the runs had done everything (the reprotect cut) ends succeeded, saying so. Checked after
 * each cut: the job not left running, the VM running at one site only with its identity, no
 * QEMU or file no row owns at either site, replication back in place once the reprotect ran,
 * and, at the end, every record the guest acknowledged at either site in its log.
 */
let sites: TwoSites;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);
const acked: number[] = [];

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
  for (const [site, peer] of [
    ['a', 'site-b'],
    ['b', 'site-a'],
  ] as const) {
    await sites.cliJson(site, 'network', 'create', 'testnet', '--isolated');
    await sites.cliJson(site, 'mapping', 'set', '--peer', peer, 'network', 'user', 'user', '--test', 'testnet');
    await sites.cliJson(site, 'mapping', 'set', '--peer', peer, 'pool', 'default', 'default');
  }
});
after(async () => {
  await sites?.destroy();
});

async function failoverJob(site: SiteProcess): Promise<Job> {
  // Each cut is the first vm-failover job at its site (the first at site-a, the second at site-b).
  const jobs = await site.cliJson<Job[]>('job', 'list', '--kind', 'vm-failover');
  assert.equal(jobs.length, 1, JSON.stringify(jobs));
  return jobs[0]!;
}

/** No orphan file, folder or QEMU at either site (a reprotect's old disk is its replica's seed, by the manifest). */
async function bothClean(): Promise<void> {
  for (const s of [sites.a, sites.b]) {
    assert.deepEqual(await orphans(s.dataDir), { files: [], vmDirs: [], replicaDirs: [] }, `${s.name}: no orphan`);
    await assertNoStrayQemu(s);
  }
}

/** The VM runs at `at` only, with its one identity, writing its log. */
async function runsAt(at: 'a' | 'b', id: string): Promise<VmView> {
  const other = at === 'a' ? b : a;
  const vm = await sites.cliJson<VmView>(at, 'vm', 'show', 'fo');
  assert.equal(vm.state, 'running');
  assert.equal(vm.id, id);
  const there = (await other<VmView[]>('vm', 'list')).filter((v) => v.name === 'fo');
  assert.ok(
    there.every((v) => v.state !== 'running'),
    `fo runs at one site only: ${JSON.stringify(there)}`,
  );
  await sites
    .site(at)
    .waitFor(
      `fo writing at site-${at}`,
      async () => parseSerialAcks(await readFile(vm.serialLog, 'utf8')).length >= 5 || undefined,
      180_000,
    );
  return vm;
}

async function noteAcks(vm: VmView | FileHandle): Promise<void> {
  const text = 'serialLog' in vm ? await readFile(vm.serialLog, 'utf8') : await vm.readFile('utf8');
  acked.push(Math.max(...parseSerialAcks(text)));
}

test('a failover cut after its failover step: the VM runs at site-b, the job names the reprotect, which then succeeds', async () => {
  await a('vm', 'create', 'fo', '--test-guest', '--data-disk', '32M', '--writelog-rate', '10');
  await a('vm', 'start', 'fo');
  await sites.a.waitFor('fo heartbeat', async () => (await a<VmView>('vm', 'show', 'fo')).lastHeartbeatAt, 180_000);
  await a('replicate', 'enable', 'fo', '--to', 'site-b', '--rpo', '1h');
  await sites.a.waitFor(
    'first point',
    async () => (await a<ReplicationStatus>('replicate', 'status', 'fo')).lastPointAt,
    180_000,
  );
  const source = await a<VmView>('vm', 'show', 'fo');

  await cutAtStep(sites.a, 'job:vm-failover:failover', ['vm', 'failover', 'fo', '--planned', '--json']);
  await noteAcks(source);
  const cut = await failoverJob(sites.a);
  assert.equal(cut.state, 'failed');
  assert.match(
    cut.error?.message ?? '',
    /fo runs at site-b; the reprotect did not start: run it at site-b with 'mamori plan run failover-fo --mode reprotect'/,
  );
  const there = await runsAt('b', source.id);
  await bothClean();

  // What the message says to run, run: the reprotect, and replication runs back.
  const rr = await sites.cli('b', 'plan', 'run', 'failover-fo', '--mode', 'reprotect', '--json');
  assert.equal(rr.code, 0, rr.stderr + rr.stdout.slice(0, 3000));
  await sites.b.waitFor(
    'a point at site-a',
    async () => {
      const s = await b<ReplicationStatus>('replicate', 'status', 'fo');
      return s.to === 'site-a' && s.points >= 1;
    },
    180_000,
  );
  assert.ok(!(await a<VmView[]>('vm', 'list')).some((v) => v.name === 'fo'), 'site-a keeps fo only as a replica');
  await runsAt('b', source.id);
  await noteAcks(there);
  await bothClean();
});

test('a failover cut after its reprotect step: it had done its work and says so; a failover after it succeeds', async () => {
  const source = await b<VmView>('vm', 'show', 'fo');
  // The reprotect turns the VM here into a seed and removes its runtime folder, serial log and
  // all: read the log through a handle opened before (an unlinked file stays readable).
  const sourceLog = await open(source.serialLog, 'r');
  await cutAtStep(sites.b, 'job:vm-failover:reprotect', ['vm', 'failover', 'fo', '--planned', '--json']);
  await noteAcks(sourceLog);
  await sourceLog.close();
  const cut = await failoverJob(sites.b);
  // Nothing was left to run: the failover is done, so the job succeeded (with the runs' result).
  assert.equal(cut.state, 'succeeded', JSON.stringify(cut));
  assert.equal(cut.error, null);
  const recovered = cut.result as { recovered: string; result: VmFailoverResult };
  assert.match(recovered.recovered, /which had done its work: fo runs at site-a \(run .*\) and replicates back/);
  assert.equal(recovered.result.to, 'site-a');
  assert.equal(recovered.result.reprotect?.state, 'done');
  const here = await runsAt('a', source.id);
  await sites.a.waitFor(
    'a point at site-b',
    async () => {
      const s = await a<ReplicationStatus>('replicate', 'status', 'fo');
      return s.to === 'site-b' && s.points >= 1;
    },
    180_000,
  );
  await bothClean();

  // The same operation again, uncut, on what the recovery left.
  const r = await sites.cli('a', 'vm', 'failover', 'fo', '--planned', '--no-reverse', '--json');
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 3000));
  const job = JSON.parse(r.stdout) as Job & { result: VmFailoverResult };
  assert.equal(job.state, 'succeeded');
  await noteAcks(here);
  const last = await runsAt('b', source.id);
  await b('vm', 'stop', 'fo', '--timeout', '60');
  await noteAcks(last);
  await bothClean();

  // Ground truth: every record the guest acknowledged, at either site, through both cuts.
  const report = await b<{ consistent: boolean; lastSequence: number }>('verify-writelog', last.disks[0]!.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.ok(
    report.lastSequence >= Math.max(...acked),
    `log holds ${report.lastSequence}, guest acknowledged ${acked.join(', ')}`,
  );
});

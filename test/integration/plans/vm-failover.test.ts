import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { TwoSites } from '../../harness/two-sites.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { VmFailoverResult } from '../../../src/site-roles/vm-failover.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';

/*
 * `mamori vm failover VM --planned`, asked at the site where the VM runs: a one-VM recovery
 * plan runs at the site holding its replica, in planned mode (shutdown, final sync, power-on
 * there, nothing lost) and then reprotect (replication runs back). Real sites in namespaces,
 * a test guest writing its log.
 */
let sites: TwoSites;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
  await b('network', 'create', 'testnet', '--isolated');
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
});
after(async () => {
  await sites?.destroy();
});

test('failover asks for --planned, a replicated VM, and says where to go otherwise', async () => {
  await a('vm', 'create', 'lonely', '--test-guest');
  const unplanned = await sites.cli('a', 'vm', 'failover', 'lonely');
  assert.notEqual(unplanned.code, 0);
  assert.match(unplanned.stderr, /--mode disaster.*vm migrate|only a planned failover/);
  const notReplicated = await sites.cli('a', 'vm', 'failover', 'lonely', '--planned');
  assert.notEqual(notReplicated.code, 0);
  assert.match(notReplicated.stderr, /lonely is not replicated.*mamori replicate enable lonely/);
  const unknown = await sites.cli('a', 'vm', 'failover', 'ghost', '--planned');
  assert.match(unknown.stderr, /VM_NOT_FOUND/);
  const help = await sites.cli('a', 'vm', 'help');
  assert.match(help.stderr + help.stdout, /migrate or failover\?/);
  // Nothing was made at either site.
  assert.deepEqual(await b<unknown[]>('plan', 'list'), []);
  assert.equal((await a<VmView>('vm', 'show', 'lonely')).state, 'stopped');
  await a('vm', 'delete', 'lonely');
});

test('a planned failover of one writing VM: it runs at the replica site with nothing lost, and replicates back', async () => {
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
  // The reprotect turns the VM here into a seed and removes its runtime folder, serial log and
  // all: its log is read through a handle opened before (an unlinked file stays readable).
  const sourceLog = await open(source.serialLog, 'r');

  // A final sync that cannot complete hands nothing over: the replica's folder at site-b is made
  // immutable, so the cycle cannot write its point. The run stops; the VM stays off here, its
  // replication as it was, and nothing was promoted.
  const [replicaId] = await readdir(join(sites.b.dataDir, 'replicas'));
  const replicaDisk = join(sites.b.dataDir, 'replicas', replicaId!, 'disk0');
  await runProcess('chattr', ['+i', replicaDisk]);
  const refused = await sites
    .cli('a', 'vm', 'failover', 'fo', '--planned', '--json')
    .finally(() => runProcess('chattr', ['-i', replicaDisk]));
  assert.notEqual(refused.code, 0, refused.stdout.slice(0, 2000));
  assert.match(refused.stderr + refused.stdout, /the last replication cycle of fo failed 3 times/);
  assert.equal((await a<VmView>('vm', 'show', 'fo')).state, 'stopped');
  assert.equal((await a<ReplicationStatus>('replicate', 'status', 'fo')).state, 'enabled');
  assert.deepEqual(await b<VmView[]>('vm', 'list'), [], 'site-b recovered nothing');

  // Fixed, the same command goes through: the VM is off already, so only the final sync runs.
  const r = await sites.cli('a', 'vm', 'failover', 'fo', '--planned', '--json');
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 3000));
  const job = JSON.parse(r.stdout) as Job & { result: VmFailoverResult };
  assert.equal(job.state, 'succeeded');
  assert.equal(job.result.to, 'site-b');
  assert.equal(job.result.failover.result, 'success');
  assert.equal(job.result.failover.mode, 'planned');
  assert.equal(job.result.reprotect?.result, 'success');
  const loss = job.result.failover.vms[0]!.dataLoss;
  assert.deepEqual(
    [loss?.atLeastSec, loss?.atMostSec, loss?.atMostFrom.source],
    [0, 0, 'shut-down-before-point'],
    'a planned failover loses nothing',
  );

  // Site-b runs it with the same identity and replicates it back; site-a's disks became that replica.
  assert.ok(!(await a<VmView[]>('vm', 'list')).some((v) => v.name === 'fo'), 'site-a keeps fo only as a replica');
  const there = await b<VmView>('vm', 'show', 'fo');
  assert.equal(there.state, 'running');
  assert.equal(there.id, source.id);
  const back = await b<ReplicationStatus>('replicate', 'status', 'fo');
  assert.equal(back.to, 'site-a');
  assert.ok(back.points >= 1);
  // The run is site-b's: in its plan history, under the one-VM plan.
  const plans = await b<{ name: string; vms: { name: string }[] }[]>('plan', 'list');
  assert.deepEqual(
    plans.map((p) => [p.name, p.vms.map((v) => v.name)]),
    [['failover-fo', ['fo']]],
  );
  const ackedAtA = Math.max(...parseSerialAcks(await sourceLog.readFile('utf8')));
  await sourceLog.close();
  await sites.b.waitForAcks('writes at site-b', there.serialLog, 10);

  // And home again the same way, asked at site-b this time, without reversing.
  await a('network', 'create', 'testnet', '--isolated');
  await a('mapping', 'set', '--peer', 'site-b', 'network', 'user', 'user', '--test', 'testnet');
  await a('mapping', 'set', '--peer', 'site-b', 'pool', 'default', 'default');
  const home = await sites.cli('b', 'vm', 'failover', 'fo', '--planned', '--no-reverse', '--json');
  assert.equal(home.code, 0, home.stderr + home.stdout.slice(0, 3000));
  const homeJob = JSON.parse(home.stdout) as Job & { result: VmFailoverResult };
  assert.equal(homeJob.result.to, 'site-a');
  assert.equal(homeJob.result.reprotect, null);
  assert.equal((await b<VmView>('vm', 'show', 'fo')).state, 'stopped', 'site-b keeps its copy off');
  const ackedAtB = Math.max(...parseSerialAcks(await readFile(there.serialLog, 'utf8')));
  const again = await a<VmView>('vm', 'show', 'fo');
  assert.equal(again.state, 'running');
  assert.equal(again.id, source.id);

  // Ground truth: every record the guest acknowledged at either site is in the log it writes on at site-a.
  await sites.a.waitForAcks('writes at site-a again', again.serialLog, 5);
  await a('vm', 'stop', 'fo', '--timeout', '60');
  const ackedAgain = Math.max(...parseSerialAcks(await readFile(again.serialLog, 'utf8')));
  const report = await a<{ consistent: boolean; lastSequence: number; tornCount: number }>(
    'verify-writelog',
    again.disks[0]!.path,
  );
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.ok(
    ackedAtB > ackedAtA && ackedAgain > ackedAtB,
    `the guest wrote on at each site (${ackedAtA}, ${ackedAtB}, ${ackedAgain})`,
  );
  assert.ok(report.lastSequence >= ackedAgain, `log holds ${report.lastSequence}, guest acknowledged ${ackedAgain}`);

  // The copy at site-b was failed over: the shortcut says so instead of running it twice.
  const twice = await sites.cli('b', 'vm', 'failover', 'fo', '--planned');
  assert.match(twice.stderr, /already failed over to site-a.*VM_SUPERSEDED/);

  // Hyper-V's "same ID already exists": a live migration onto that old copy's site says what to do.
  await a('vm', 'start', 'fo');
  await sites.a.waitFor(
    'fo heartbeat at site-a',
    async () => (await a<VmView>('vm', 'show', 'fo')).lastHeartbeatAt !== again.lastHeartbeatAt || undefined,
    180_000,
  );
  const blocked = await sites.cli('a', 'vm', 'migrate', 'fo', '--to', 'site-b');
  assert.notEqual(blocked.code, 0);
  assert.match(
    blocked.stdout + blocked.stderr,
    /keeps an older copy of fo .*failed over to site-a.*mamori vm delete fo/,
  );
  assert.equal((await a<VmView>('vm', 'show', 'fo')).state, 'running', 'the VM runs on at site-a');
  await b('vm', 'delete', 'fo', '--force');
  const moved = await sites.cli('a', 'vm', 'migrate', 'fo', '--to', 'site-b');
  assert.equal(moved.code, 0, moved.stderr + moved.stdout);
  assert.equal((await b<VmView>('vm', 'show', 'fo')).id, source.id);
});

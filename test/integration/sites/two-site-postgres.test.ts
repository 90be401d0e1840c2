import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { PgCluster } from '../../harness/pg-cluster.js';
import { protectWritingGuest } from '../../harness/protected-guest.js';
import { runPlanThroughCrash } from '../../harness/plan-run-crash.js';
import { siteCount } from '../../harness/site-db.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { logPrefixOf } from '../../harness/writelog-prefix.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { VmView } from '../../../src/vms/vm-service.js';

/*
 * The two-site flow with one site on PostgreSQL (issue 20): site-b, the recovery site, serves
 * from a throwaway cluster (`serve --db`), site-a keeps SQLite. site-b is the one on PostgreSQL
 * because this flow writes most of its state there: every point received (replicas, points),
 * the plan and its run journal step by step, replica holds, the recovered VMs, promotion and
 * supersession. The protected side's store (VMs, replications, cycle jobs) is the same code
 * the single-site PostgreSQL test and the store suite run. MAMORI_PG_SITE=a puts site-a on it
 * instead. The cluster listens on a unix socket in /tmp, which the namespaced site reaches.
 *
 * Flow: protect a writing test guest at site-a, replicate to site-b, run the plan's test
 * (the test VM's log is a gap-free prefix of the protected log, record by record), cleanup
 * (nothing left, in the database too), then a planned run cut by a kill -9 of site-b's server and
 * resumed (nothing acknowledged is lost, the VM recovered once).
 */
const PG_SITE = process.env['MAMORI_PG_SITE'] === 'a' ? 'a' : 'b';
const VM = 'pgvm';
const TEST_IP = '192.168.77.20/24';

let cluster: PgCluster;
let sites: TwoSites;
let work: string;
let protectedVm: VmView;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-pg2-'));
  cluster = await PgCluster.start();
  sites = await TwoSites.create({ db: { [PG_SITE]: await cluster.createDatabase(`site_${PG_SITE}`) } });
  await sites.pairBothWays();
  protectedVm = await protectWritingGuest(sites.a, VM, { to: 'site-b' });
  await a('group', 'create', 'pgg', '--vm', VM);
  await b('network', 'create', 'testnet', '--isolated');
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
  const plan = join(work, 'plan.yaml');
  await writeFile(
    plan,
    `name: pg-plan
protectionGroups: [pgg]
vms:
  ${VM}:
    priority: 1
    waitHeartbeat: 240s
    testIp: { address: ${TEST_IP} }
`,
  );
  await b('plan', 'apply', plan);
});

after(async () => {
  // Sites first (their servers hold connections), then the cluster by its pid.
  await sites?.destroy();
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function explain(run: PlanRun): string {
  return JSON.stringify(run.steps.map((s) => `${s.state} ${s.label} ${s.message ?? ''}`));
}

/** Runs the plan in `mode`, following it to its end (no prompt in this plan); returns the run. */
async function runPlan(mode: string): Promise<PlanRun> {
  const r = await sites.cli('b', 'plan', 'run', 'pg-plan', '--mode', mode);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const id = /^run (run-\S+):/m.exec(r.stdout)?.[1];
  assert.ok(id, `the CLI names the run: ${r.stdout}`);
  return b<PlanRun>('plan', 'report', id, '--json');
}

const ackedBy = async (vm: VmView): Promise<number> =>
  Math.max(0, ...parseSerialAcks(await readFile(vm.serialLog, 'utf8')));

test('the PostgreSQL site serves from the cluster, not from a SQLite file', async () => {
  const site = sites.site(PG_SITE);
  assert.ok(site.db);
  await assert.rejects(access(join(site.dataDir, 'mamori.db')), 'no SQLite file beside the data');
  assert.ok(!site.serverLog.includes(cluster.password), 'the password never shows in the server log');
  // The first point is there: site-a counts a replication, site-b a replica with a point.
  const table = PG_SITE === 'a' ? 'replications' : 'replica_points';
  assert.ok((await siteCount(site, `SELECT count(*) AS n FROM ${table}`)) >= 1, `${table} has rows`);
});

test('test recovery on a PostgreSQL site: the test VM holds a gap-free prefix of the log; cleanup leaves nothing', async () => {
  const before = await a<ReplicationStatus>('replicate', 'status', VM);
  const run = await runPlan('test');
  assert.equal(run.result, 'success', explain(run));
  const out = run.vms[VM]!;
  assert.equal(out.ip, TEST_IP);
  assert.ok(out.rtoSec! > 0 && out.point, 'recovered from a point, with a heartbeat');

  // Ground truth: the test copy's writer resumed after N, and the copy holds records 1..N
  // exactly as the protected guest wrote them.
  const resumed = await writerResumedAfter(sites.b, VM);
  assert.ok(resumed > 0, 'the test copy continues the log it had at the point');
  const testVm = (await b<VmView[]>('vm', 'list')).find((v) => v.id === out.recoveredVmId);
  assert.ok(testVm, `the test VM ${out.recoveredVmId} is listed at site-b`);
  const held = await logPrefixOf(protectedVm.disks[0]!.path, testVm.disks[0]!.path, resumed);
  assert.deepEqual(held.mismatched, [], 'no record up to the point differs from the protected one');
  assert.ok(
    held.prefix >= resumed,
    `the test copy holds 1..${held.prefix} of the log, its writer resumed after ${resumed}`,
  );

  // The protected VM runs on, and replication still advances.
  assert.equal((await a<VmView>('vm', 'show', VM)).state, 'running');
  const synced = await a<ReplicationStatus>('replicate', 'sync-now', VM);
  assert.equal(synced.failures, 0, synced.lastError ?? '');
  assert.ok(synced.lastPointAt! > before.lastPointAt!);

  const clean = await runPlan('cleanup');
  assert.equal(clean.result, 'success', explain(clean));
  assert.deepEqual(await b<VmView[]>('vm', 'list'), []);
  for (const [what, sql] of [
    ['replica holds', 'SELECT count(*) AS n FROM replica_holds'],
    ['recovered VMs', 'SELECT count(*) AS n FROM recovered_vms'],
    ['promoted replicas', 'SELECT count(*) AS n FROM replicas WHERE promoted_at IS NOT NULL'],
  ] as const)
    assert.equal(await siteCount(sites.b, sql), 0, `cleanup leaves no ${what}`);
  await assert.rejects(access(join(sites.b.dataDir, 'pools', 'default', 'recovered', run.id)));
});

test('planned migration with a PostgreSQL site, its runner killed mid-run and resumed: nothing acknowledged is lost, and site-a keeps its copy off', async () => {
  // kill -9 of site-b's server mid-run: the run journal is read back from its database (PostgreSQL
  // by default) as interrupted, and resumes to a correct end.
  const run = await runPlanThroughCrash(sites.b, 'pg-plan', 'planned');
  assert.equal(run.result, 'success', explain(run));
  const out = run.vms[VM]!;
  assert.deepEqual([out.dataLoss?.atLeastSec, out.dataLoss?.atMostSec], [0, 0], 'shut down before its last point');

  const there = await a<VmView>('vm', 'show', VM);
  assert.equal(there.state, 'stopped');
  const acked = await ackedBy(there);
  assert.ok(acked > 0, 'the guest acknowledged records');
  const verified = await a<{ report: { consistent: boolean; lastSequence: number } }>(
    'replicate',
    'verify',
    VM,
    '--point',
    out.point!.id,
  );
  assert.equal(verified.report.consistent, true);
  assert.ok(verified.report.lastSequence >= acked, `point holds ${verified.report.lastSequence}, acked ${acked}`);

  const here = await b<VmView>('vm', 'show', VM);
  assert.equal(here.state, 'running');
  const resumed = await writerResumedAfter(sites.b, VM);
  assert.ok(resumed >= acked, `site-b's guest resumed after ${resumed}, site-a's acknowledged ${acked}`);
  const held = await logPrefixOf(there.disks[0]!.path, here.disks[0]!.path, resumed);
  assert.deepEqual(held.mismatched, []);
  assert.ok(held.prefix >= acked, `the recovered disk holds 1..${held.prefix}, acked ${acked}`);

  const start = await sites.cli('a', 'vm', 'start', VM);
  assert.notEqual(start.code, 0);
  assert.match(start.stderr, /VM_SUPERSEDED/);
  assert.equal(
    await siteCount(sites.b, 'SELECT count(*) AS n FROM recovered_vms'),
    1,
    'one recovered VM, no duplicate',
  );
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TwoSites } from '../../harness/two-sites.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { ZfsFuse, type TestPool } from '../../harness/zfs-fuse.js';
import { repoRoot } from '../../harness/repo-root.js';
import { runProcess } from '../../../src/core/run-process.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { trueLoss, writeLogRecords } from '../../harness/writelog-loss.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { ProtectionGroupView } from '../../../src/plans/protection-groups.js';
import type { VmView } from '../../../src/vms/vm-service.js';

/*
 * An array-based protection group in recovery plans, end to end, in one plan with a
 * host-based group (mamori replicates its VM) beside it: two sites in their own
 * network namespaces, each with a zfs-fuse pool as its array (one zfs-fuse daemon serves
 * both: it is one per host), the bundled ZFS adapter at each site, and a test guest at
 * site-a whose disk lives on the replicated dataset. The array replicates the dataset; the
 * plan at site-b drives the adapters at both sites: test (a clone of the newest received
 * snapshot) -> cleanup -> planned migration (zero loss) -> reprotect (incremental from the
 * common snapshot), and a test at site-a of the reversed direction proves, record by record,
 * that site-b's writes reach site-a's array.
 */
const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');
let sites: TwoSites;
let zfs: ZfsFuse;
let poolA: TestPool;
let poolB: TestPool;
let work: string;
const VMS = ['db', 'web'] as const;
/** Write-log records each test guest writes per second. */
const RATE = 10;
/**
 * How far the write log's true loss and the run's bounds may disagree without either being
 * wrong (the bounds are rounded outward already, and an array point's whole-second time is
 * allowed for by the bounds themselves): the last record in the point was built before the
 * point by up to one write period plus the write and flush that made it durable, so the log
 * can show that much more; record times are the guest's clock and bounds the host's, the same
 * rate over seconds. Two write periods plus 0.1 s; the scenario's margins are seconds wide.
 */
const SLACK_SEC = 2 / RATE + 0.1;

const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-array-plans-'));
  zfs = await ZfsFuse.acquire();
  poolA = await zfs.createPool('a', 512);
  poolB = await zfs.createPool('b', 512);
  await zfsCmd('create', `${poolA.name}/vmstore`);
  // Replication starts with the source naming its peer (docs/adapters.md, "Starting replication").
  await zfsCmd('set', `mamori:peer=${poolB.name}/vmstore`, `${poolA.name}/vmstore`);
  sites = await TwoSites.create({ hostMounts: true });
  await sites.pairBothWays();
  await a(
    'array',
    'add',
    'store-a',
    '--adapter',
    'zfs',
    '--connection',
    `pools=${poolA.name}`,
    '--connection',
    'peerCommand=[]',
  );
  await b(
    'array',
    'add',
    'store-b',
    '--adapter',
    'zfs',
    '--connection',
    `pools=${poolB.name}`,
    '--connection',
    'peerCommand=[]',
  );
  // The VM's disk is made on the replicated dataset, not in the site's pool.
  await a('disk', 'create', 'web-data', '--size', '32M', '--array', 'store-a', '--device', 'vmstore');
  await a(
    'vm',
    'create',
    'web',
    '--test-guest',
    '--disk',
    'web-data',
    '--network',
    'none',
    '--writelog-rate',
    String(RATE),
  );
  // The host-based neighbour: a VM in the site's pool, replicated by mamori.
  await a(
    'vm',
    'create',
    'db',
    '--test-guest',
    '--data-disk',
    '32M',
    '--network',
    'none',
    '--writelog-rate',
    String(RATE),
  );
  for (const vm of VMS) await a('vm', 'start', vm);
  for (const vm of VMS)
    await sites.a.waitFor(`${vm} heartbeat`, async () => (await a<VmView>('vm', 'show', vm)).lastHeartbeatAt, 180_000);
  await a('replicate', 'enable', 'db', '--to', 'site-b', '--rpo', '1h');
  await sites.a.waitFor(
    'db first point',
    async () => (await a<{ lastPointAt: string | null }>('replicate', 'status', 'db')).lastPointAt,
    180_000,
  );
  await a('group', 'create', 'apps', '--vm', 'db');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
});

after(async () => {
  await sites?.destroy();
  await zfs?.release();
  if (work) await rm(work, { recursive: true, force: true });
});

async function zfsCmd(...args: string[]): Promise<string> {
  return (await runProcess('zfs', args, { timeoutMs: 120_000 })).stdout.trim();
}

async function zfsProp(dataset: string, prop: string): Promise<string> {
  return zfsCmd('get', '-H', '-o', 'value', prop, dataset);
}

async function planFile(name: string, text: string): Promise<string> {
  const path = join(work, name);
  await writeFile(path, text);
  return path;
}

/** A run's step kinds (with the VM for per-VM steps), sorted: parallel chains have no fixed order. */
function kinds(run: PlanRun): string[] {
  return run.steps.map((s) => (s.vm ? `${s.kind}:${s.vm}` : s.kind)).sort();
}

function explain(run: PlanRun): string {
  return JSON.stringify(
    run.steps.map((s) => `${s.state} ${s.label} ${s.message ?? ''}`),
    null,
    1,
  );
}

/** Runs a plan to its end through the CLI and returns the run. */
async function runPlan(site: 'a' | 'b', plan: string, mode: string): Promise<PlanRun> {
  const r = await sites.cli(site, 'plan', 'run', plan, '--mode', mode);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  return sites.cliJson<PlanRun>(site, 'plan', 'report', /^run (run-[a-z0-9]+)/m.exec(r.stdout)![1]!, '--json');
}

/** The highest record the guest acknowledged (flushed) so far, from its serial log. */
async function acked(site: 'a' | 'b', vm: string): Promise<number> {
  const view = await sites.cliJson<VmView>(site, 'vm', 'show', vm);
  return Math.max(0, ...parseSerialAcks(await readFile(view.serialLog, 'utf8')));
}

async function resumedAfter(site: 'a' | 'b', vm: string): Promise<number> {
  return writerResumedAfter(sites.site(site), vm);
}

function count(dataDir: string, sql: string): number {
  const db = new Database(join(dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare(sql).get() as { n: number }).n;
  } finally {
    db.close();
  }
}

test('an array-based group: refused on an unsupported array unless --force; protects the VMs whose disks are on its devices', async () => {
  // An array the compatibility guide does not list is refused, with the guide's reason.
  await a('array', 'add', 'lab', '--adapter', FAULT, '--connection', 'fault=none');
  const refused = await sites.cli(
    'a',
    'group',
    'create',
    'bad',
    '--array',
    'lab',
    '--device',
    'ghost',
    '--to',
    'site-b',
  );
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr,
    /array arr1 \(FaultBox, 1\).*is not supported: .*not in the compatibility guide.*--force.*\[COMPAT_UNSUPPORTED\]/s,
  );
  // --force passes the guide; the device's own check still applies (it replicates nowhere).
  const forced = await sites.cli(
    'a',
    'group',
    'create',
    'bad',
    '--array',
    'lab',
    '--device',
    'ghost',
    '--to',
    'site-b',
    '--force',
  );
  assert.match(forced.stderr, /device ghost of array arr1 is a source without a peer.*\[INVALID_INPUT\]/s);
  await a('array', 'remove', 'lab');

  const g = await a<ProtectionGroupView>(
    'group',
    'create',
    'store',
    '--array',
    'store-a',
    '--device',
    'vmstore',
    '--to',
    'site-b',
    '--rpo',
    '1h',
  );
  // db's disk is in the site's pool, not on the dataset: it is not in the group.
  assert.equal(g.kind, 'array');
  assert.deepEqual(g.vms, ['web'], 'the VM whose disk is on the dataset is protected');
  assert.equal(g.array!.forced, false);
  assert.match(g.array!.compat, /conformance passed/);
  assert.deepEqual(g.array!.problems, []);
  const add = await sites.cli('a', 'group', 'add', 'store', 'web');
  assert.match(add.stderr, /array-based: it protects the VMs whose disks live on its devices/);
  // A VM half on the devices is named as not protected, with why.
  await a('disk', 'create', 'half-a', '--size', '8M', '--array', 'store-a', '--device', 'vmstore');
  await a('disk', 'create', 'half-b', '--size', '8M');
  await a('vm', 'create', 'half', '--disk', 'half-a', '--disk', 'half-b', '--network', 'none');
  const withHalf = await a<ProtectionGroupView>('group', 'show', 'store');
  assert.deepEqual(withHalf.vms, ['web']);
  assert.match(
    withHalf.array!.problems.find((p) => p.vm === 'half')?.reason ?? '',
    /disks half-b are not on the group's devices/,
  );
  await a('vm', 'delete', 'half');
  await a('disk', 'delete', 'half-a');
  await a('disk', 'delete', 'half-b');

  // On its RPO the site asks the array for points: the first (a full copy) at once.
  const synced = await sites.a.waitFor(
    'the first scheduled sync',
    async () => {
      const v = await a<ProtectionGroupView>('group', 'show', 'store');
      return v.array!.sync.lastPointAt !== null || v.array!.sync.failures > 0 ? v.array!.sync : undefined;
    },
    180_000,
  );
  assert.equal(synced.failures, 0, synced.lastError ?? '');
  assert.ok(synced.lastBytesSent! > 0, `the first sync copies the dataset: ${synced.lastBytesSent} bytes`);
  assert.equal(synced.rpoViolated, false);
  assert.equal(synced.rpoSeconds, 3600);
  // A manual sync queues behind any scheduled one and sends only what changed since.
  const first = await a<{ devices: { id: string; point: string; bytesSent: number }[] }>('group', 'sync', 'store');
  assert.ok(first.devices[0]!.bytesSent > 0);
  assert.notEqual(first.devices[0]!.point, synced.lastPoint, 'a point of its own');
  // The peer dataset is a read-only, unmounted target.
  assert.equal(await zfsProp(`${poolB.name}/vmstore`, 'mamori:role'), 'target');
  assert.equal(await zfsProp(`${poolB.name}/vmstore`, 'readonly'), 'on');
});

test('test recovery from a clone of the newest array point, while replication goes on; cleanup removes the VMs and the clones', async () => {
  await b(
    'plan',
    'apply',
    await planFile(
      'store.yaml',
      'name: store-plan\nprotectionGroups: [store, apps]\nshutdownTimeout: 60s\nvms:\n  web:\n    waitHeartbeat: 240s\n  db:\n    waitHeartbeat: 240s\n',
    ),
  );
  const before = await acked('a', 'web');
  await a('group', 'sync', 'store');
  const run = await runPlan('b', 'store-plan', 'test');
  assert.equal(run.result, 'success', explain(run));
  assert.deepEqual(kinds(run), ['array-test-start', 'power-on:db', 'power-on:web', 'recover:db', 'recover:web']);
  assert.ok(run.vms['db']!.rtoSec! > 0, 'the host-based VM recovered in the same run');
  const clonePath = run.arrays['store']!.paths['vmstore']!;
  assert.match(clonePath, /vmstore-mamori-test$/);
  const testVm = await b<VmView>('vm', 'show', 'web');
  assert.equal(testVm.state, 'running');
  assert.ok(
    testVm.disks[0]!.path.startsWith(`${clonePath}/`),
    `the test VM runs on the clone: ${testVm.disks[0]!.path}`,
  );
  assert.notEqual(testVm.id, (await a<VmView>('vm', 'show', 'web')).id, 'a test copy has its own identity');
  // Ground truth: the test copy holds every record acknowledged before the sync.
  const resumed = await resumedAfter('b', 'web');
  assert.ok(resumed >= before, `the clone holds records up to ${resumed}; ${before} were acknowledged before the sync`);
  assert.ok(run.vms['web']!.rtoSec! > 0);
  // The protected VM ran on; replication still syncs into the target beside the clone.
  assert.equal((await a<VmView>('vm', 'show', 'web')).state, 'running');
  const again = await a<{ devices: { bytesSent: number }[] }>('group', 'sync', 'store');
  assert.ok(
    again.devices[0]!.bytesSent < 16 * 1024 * 1024,
    `an incremental sync: ${again.devices[0]!.bytesSent} bytes`,
  );

  const clean = await runPlan('b', 'store-plan', 'cleanup');
  assert.equal(clean.result, 'success', explain(clean));
  assert.deepEqual(kinds(clean), ['array-test-stop', 'cleanup-vm:db', 'cleanup-vm:web']);
  assert.ok(
    clean.steps.find((s) => s.kind === 'array-test-stop')!.startedAt! >=
      clean.steps.find((s) => s.vm === 'web')!.endedAt!,
    'the clone goes after its test VM',
  );
  assert.deepEqual(
    (await b<VmView[]>('vm', 'list')).map((v) => v.name),
    [],
  );
  assert.doesNotMatch(await zfsCmd('list', '-H', '-o', 'name', '-r', poolB.name), /mamori-test/);
  assert.equal(count(sites.b.dataDir, 'SELECT count(*) AS n FROM recovered_vms'), 0);
  assert.equal(count(sites.b.dataDir, 'SELECT count(*) AS n FROM disks'), 0);
});

test('planned migration through the arrays: every acknowledged write arrives; the protected copy stays off', async () => {
  const run = await runPlan('b', 'store-plan', 'planned');
  assert.equal(run.result, 'success', explain(run));
  assert.deepEqual(kinds(run), [
    'array-failover',
    'array-prepare-failover',
    'array-test-stop',
    'power-on:db',
    'power-on:web',
    'promote:db',
    'recover:db',
    'recover:web',
    'shutdown:db',
    'shutdown:web',
  ]);
  // site-a: off and superseded; its dataset read-only at the last point.
  const there = await a<VmView>('vm', 'show', 'web');
  assert.equal(there.state, 'stopped');
  // (zfs-fuse reports readonly as 'off, temporary' while the mount refuses writes: try one.)
  await assert.rejects(writeFile(join(poolA.mountpoint, 'vmstore', 'late-write'), 'x'), { code: 'EROFS' });
  const start = await sites.cli('a', 'vm', 'start', 'web');
  assert.match(start.stderr, /VM_SUPERSEDED/);
  // site-b: the failed-over dataset, the VM with its identity, continuing the log with nothing lost.
  assert.equal(await zfsProp(`${poolB.name}/vmstore`, 'mamori:role'), 'failedOver');
  const here = await b<VmView>('vm', 'show', 'web');
  assert.equal(here.state, 'running');
  assert.equal(here.id, there.id, 'a failover keeps the VM identity');
  assert.ok(here.disks[0]!.path.startsWith(`${run.arrays['store']!.paths['vmstore']!}/`));
  const ackedAtA = await acked('a', 'web');
  const resumed = await resumedAfter('b', 'web');
  assert.ok(ackedAtA > 0);
  assert.ok(resumed >= ackedAtA, `site-b continues after record ${resumed}; site-a's guest acknowledged ${ackedAtA}`);
  assert.deepEqual([run.vms['web']!.dataLoss?.atLeastSec, run.vms['web']!.dataLoss?.atMostSec], [0, 0]);
  // The host-based VM of the same plan: zero loss too.
  assert.ok((await resumedAfter('b', 'db')) >= (await acked('a', 'db')));
  assert.deepEqual([run.vms['db']!.dataLoss?.atLeastSec, run.vms['db']!.dataLoss?.atMostSec], [0, 0]);
});

test('reprotect reverses the arrays from the common point; the writes at site-b reach site-a record by record', async (t) => {
  const run = await runPlan('b', 'store-plan', 'reprotect');
  assert.equal(run.result, 'success', explain(run));
  t.diagnostic(
    `reprotect: the first sync back sent ${run.vms['web']!.reprotect!.bytesSent} bytes for web's ${run.vms['web']!.reprotect!.diskBytes}-byte disk; db (host-based) ${JSON.stringify(run.vms['db']!.reprotect)}`,
  );
  assert.deepEqual(kinds(run), ['array-prepare-reverse', 'array-reverse', 'replicate:db', 'seed-peer:db']);
  const r = run.vms['web']!.reprotect!;
  assert.equal(r.mode, 'array-incremental');
  assert.ok(r.bytesSent < r.diskBytes / 2, `reprotect sent ${r.bytesSent} bytes for ${r.diskBytes} bytes of disk`);
  assert.equal(await zfsProp(`${poolA.name}/vmstore`, 'mamori:role'), 'target');
  assert.equal(await zfsProp(`${poolB.name}/vmstore`, 'mamori:role'), 'source');
  // site-a forgot its superseded VM (its disk is the replica's data now) and the group; site-b protects it.
  assert.deepEqual(
    (await a<VmView[]>('vm', 'list')).map((v) => v.name),
    [],
  );
  assert.deepEqual(
    (await a<ProtectionGroupView[]>('group', 'list')).map((g) => g.name),
    ['apps'],
    'the host-based group stays (its VM is a seed now)',
  );
  const atB = await b<ProtectionGroupView>('group', 'show', 'store');
  assert.equal(atB.kind, 'array');
  assert.equal(atB.peer, 'site-a');
  assert.deepEqual(atB.vms, ['web']);

  // The reversed direction, proven with a test recovery at site-a of what site-b's array sent.
  await sites.b.waitFor(
    'web writes more at site-b',
    async () => ((await acked('b', 'web')) > (await resumedAfter('b', 'web')) + 20 ? true : undefined),
    120_000,
  );
  const ackedAtB = await acked('b', 'web');
  await b('group', 'sync', 'store');
  await a(
    'plan',
    'apply',
    await planFile('back.yaml', 'name: store-back\nprotectionGroups: [store]\nvms:\n  web:\n    waitHeartbeat: 240s\n'),
  );
  const back = await runPlan('a', 'store-back', 'test');
  assert.equal(back.result, 'success', explain(back));
  const resumed = await resumedAfter('a', 'web');
  assert.ok(
    resumed >= ackedAtB,
    `site-a's test copy holds records up to ${resumed}; site-b's guest acknowledged ${ackedAtB} before the sync`,
  );
  const clean = await runPlan('a', 'store-back', 'cleanup');
  assert.equal(clean.result, 'success', explain(clean));

  // Offline, as the verifier reads: site-b's disk holds a gap-free log.
  await b('vm', 'stop', 'web', '--force');
  const disk = (await b<VmView>('vm', 'show', 'web')).disks[0]!.path;
  const v = await b<{ consistent: boolean; lastSequence: number | null }>('verify-writelog', disk);
  assert.equal(v.consistent, true);
  assert.ok(v.lastSequence! >= ackedAtB);
});

test('disaster through the arrays with the link cut: the surviving site fails over from its newest point; the other keeps its copy paused when it learns', async (t) => {
  // site-b protects web now (after reprotect), recovering at site-a. A last sync, more writes, then the link is cut.
  await b('vm', 'start', 'web');
  await sites.b.waitFor(
    'web writes at site-b',
    async () => ((await acked('b', 'web')) > (await resumedAfter('b', 'web')) + 10 ? true : undefined),
    120_000,
  );
  const beforeSync = await acked('b', 'web');
  await b('group', 'sync', 'store');
  // Writes after the last point, then site-a looks at site-b once more (a plan apply fetches
  // its inventory): the last heartbeat it knows of is after the point, so "at least" is > 0.
  const afterSync = await acked('b', 'web');
  await sites.b.waitFor(
    'web writes 3 s past the point',
    async () => ((await acked('b', 'web')) >= afterSync + 3 * RATE ? true : undefined),
    120_000,
  );
  await a('plan', 'apply', join(work, 'back.yaml'));
  const protectedWeb = await b<VmView>('vm', 'show', 'web');
  await sites.cutLink('blackhole');
  // What site-b's guest had acknowledged when site-b stopped answering, read at once. Its VM
  // runs on (below): what it writes after this is a split brain's, kept at site-b (paused
  // when it learns of the failover), not loss site-a can bound: its "at most" holds if the
  // protected site stopped when it stopped answering, and says so.
  const ackedAtCut = Math.max(...parseSerialAcks(await readFile(protectedWeb.serialLog, 'utf8')));
  // site-b's server dies; its VM keeps running (QEMU outlives the server): the split brain to guard against.
  await sites.b.crashServer();
  const run = await runPlan('a', 'store-back', 'disaster');
  assert.equal(run.result, 'warnings', explain(run));
  const step = (kind: string) => run.steps.find((s) => s.kind === kind)!;
  assert.equal(step('array-prepare-failover').state, 'skipped');
  assert.match(step('array-prepare-failover').message!, /did not answer/);
  assert.match(step('array-failover').message!, /did not answer: it keeps its copies of web until told/);
  assert.equal(await zfsProp(`${poolA.name}/vmstore`, 'mamori:role'), 'failedOver');
  const resumed = await resumedAfter('a', 'web');
  assert.ok(
    resumed >= beforeSync,
    `site-a continues after ${resumed}; ${beforeSync} were acknowledged before the last sync`,
  );
  const out = run.vms['web']!;
  // The true loss on the write log, between the run's bounds (see SLACK_SEC). Both disks are
  // read while their QEMUs hold them (-U): the records compared are never rewritten.
  const recoveredWeb = await a<VmView>('vm', 'show', 'web');
  const loss = trueLoss(
    await writeLogRecords(protectedWeb.disks[0]!.path),
    await writeLogRecords(recoveredWeb.disks[0]!.path),
    ackedAtCut,
  );
  const d = out.dataLoss;
  const what =
    `${loss.lastAcked - loss.lastRecovered} acknowledged records lost (${loss.lastRecovered + 1}..${loss.lastAcked}), ${loss.sec.toFixed(3)} s of log; ` +
    `the run says ${JSON.stringify(d)} (${out.dataLossNote})`;
  t.diagnostic(`web: ${what}`);
  assert.ok(d && d.atMostSec !== null, `both bounds are stated: ${what}`);
  assert.ok(loss.lastAcked > loss.lastRecovered, `the scenario loses records: ${what}`);
  assert.ok(d.atLeastSec > 0, `site-a saw a heartbeat after the array's point, so at least is more than zero: ${what}`);
  assert.ok(d.atLeastSec <= loss.sec + SLACK_SEC, `at least is not more than was lost: ${what}`);
  assert.ok(loss.sec <= d.atMostSec + SLACK_SEC, `at most is not less than was lost: ${what}`);

  // site-b comes back: it asks site-a, learns of the failover and pauses its copy.
  await sites.restoreLink();
  await sites.b.start();
  const paused = await sites.b.waitFor(
    'site-b pauses its superseded web',
    async () => {
      const v = await b<VmView>('vm', 'show', 'web');
      return v.state === 'paused' ? v : undefined;
    },
    120_000,
  );
  assert.equal(paused.state, 'paused');
  const resume = await sites.cli('b', 'vm', 'resume', 'web');
  assert.match(
    resume.stderr,
    /was failed over to site site-a.*VM_SUPERSEDED/s,
    'a superseded copy is not resumed without --force',
  );
  assert.equal((await a<VmView>('vm', 'show', 'web')).state, 'running');
});

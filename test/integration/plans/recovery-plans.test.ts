import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, writeFile, mkdtemp, rm, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TwoSites } from '../../harness/two-sites.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { runPlanThroughCrash } from '../../harness/plan-run-crash.js';
import { runProcess } from '../../../src/core/run-process.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { trueLoss, writeLogRecords } from '../../harness/writelog-loss.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { NetworkView } from '../../../src/networks/site-networks.js';

/*
 * Recovery plans end to end, with real QEMU test guests writing their logs at site-a and
 * plans run at site-b (each site in its own network namespace):
 *   test (isolated network, test IPs, replication goes on) -> cleanup -> planned (zero loss,
 *   with site-b's server killed mid-run and the run resumed) -> disaster on a second plan
 *   (link cut, site-a's processes killed) -> site-a's return keeps its superseded VMs off.
 */
let sites: TwoSites;
let work: string;
const VMS = ['db', 'app', 'web'] as const;
/** Write-log records each test guest writes per second. */
const RATE = 10;
const TEST_IPS: Record<string, string> = { db: '192.168.77.10/24', app: '192.168.77.11/24', web: '192.168.77.12/24' };

const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-plans-'));
  sites = await TwoSites.create();
  await sites.pairBothWays();
  for (const vm of VMS)
    await a('vm', 'create', vm, '--test-guest', '--data-disk', '32M', '--writelog-rate', String(RATE));
  // The disaster test needs its guests still writing when site-a is lost, after every test
  // before it: 128 MiB holds 32768 records, 54 minutes of log at 10 a second (32 MiB: 13).
  for (const vm of ['dx1', 'dx2'])
    await a('vm', 'create', vm, '--test-guest', '--data-disk', '128M', '--writelog-rate', String(RATE));
  for (const vm of [...VMS, 'dx1', 'dx2']) await a('vm', 'start', vm);
  for (const vm of [...VMS, 'dx1', 'dx2'])
    await sites.a.waitFor(`${vm} heartbeat`, async () => (await a<VmView>('vm', 'show', vm)).lastHeartbeatAt, 180_000);
  // A long RPO: the cycles the tests rely on are started by hand (sync-now), or by the plan.
  for (const vm of [...VMS, 'dx1', 'dx2']) await a('replicate', 'enable', vm, '--to', 'site-b', '--rpo', '1h');
  for (const vm of [...VMS, 'dx1', 'dx2'])
    await sites.a.waitFor(
      `${vm} first point`,
      async () => (await a<ReplicationStatus>('replicate', 'status', vm)).lastPointAt,
      180_000,
    );
  await a('group', 'create', 'apps', '--vm', 'db', '--vm', 'app', '--vm', 'web');
  await a('group', 'create', 'dxg', '--vm', 'dx1', '--vm', 'dx2');
  await b('network', 'create', 'testnet', '--isolated');
});

after(async () => {
  await sites?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

function planYaml(): string {
  return `name: apps-plan
description: three tiers, two priorities
protectionGroups: [apps]
shutdownTimeout: 60s
concurrency: 2
vms:
  db:
    priority: 1
    waitHeartbeat: 240s
    testIp: { address: ${TEST_IPS['db']} }
    recoveryIp: { address: 10.77.0.10/24, gateway: 10.77.0.1 }
  app:
    priority: 2
    waitHeartbeat: 240s
    testIp: { address: ${TEST_IPS['app']} }
  web:
    priority: 2
    dependsOn: [app]
    waitHeartbeat: 240s
    testIp: { address: ${TEST_IPS['web']} }
steps:
  - after: priority 1
    command: ["/bin/echo", "db is up"]
    timeout: 30s
  - before: priority 2
    prompt: "check the database, then continue"
    modes: [test]
`;
}

async function planFile(name: string, text: string): Promise<string> {
  const path = join(work, name);
  await writeFile(path, text);
  return path;
}

async function waitRun(id: string, states: string[] = ['done', 'cancelled']): Promise<PlanRun> {
  return sites.b.waitFor(
    `run ${id} in ${states.join('|')}`,
    async () => {
      const r = await b<PlanRun>('plan', 'report', id, '--json');
      return states.includes(r.state) ? r : undefined;
    },
    900_000,
  );
}

function explain(run: PlanRun): string {
  return JSON.stringify(
    run.steps.map((s) => `${s.state} ${s.label} ${s.message ?? ''}`),
    null,
    1,
  );
}

async function bridgePorts(bridge: string): Promise<string[]> {
  const r = await runProcess('ip', [
    'netns',
    'exec',
    sites.namespaces[1]!.name,
    'ip',
    '-o',
    'link',
    'show',
    'master',
    bridge,
  ]);
  return [...r.stdout.matchAll(/^\d+:\s+([^:@\s]+)/gm)].map((m) => m[1]!);
}

async function resumedAfter(site: 'a' | 'b', vm: string): Promise<number> {
  return writerResumedAfter(sites.site(site), vm);
}

/**
 * The write log's true loss lies between the run's bounds, up to what the two ways of
 * measuring cannot tell apart (the bounds are already rounded outward, so not rounding):
 *  - the last record in the point was built before the point by up to one write period plus
 *    the write and flush that made it durable, so the log can show up to that much more;
 *  - a host-based point's time is read just before the QMP transaction that takes it (an
 *    array's is whole seconds: the bounds allow for that themselves);
 *  - record times are the guest's clock, bounds the host's: the same rate over seconds,
 *    a few milliseconds apart in each reading.
 * Two write periods plus 0.1 s covers these; the margins the scenario leaves (seconds between
 * the last heartbeat and the kill, and between the kill and the run) are far wider.
 */
const SLACK_SEC = 2 / RATE + 0.1;

function assertWithinBounds(
  vm: string,
  out: PlanRun['vms'][string],
  loss: { sec: number; lastAcked: number; lastRecovered: number },
  say: (text: string) => void,
): void {
  const d = out.dataLoss;
  assert.ok(d, `${vm}: the run states its data loss`);
  const what =
    `${vm}: ${loss.lastAcked - loss.lastRecovered} acknowledged records lost (${loss.lastRecovered + 1}..${loss.lastAcked}), ${loss.sec.toFixed(3)} s of log; ` +
    `the run says ${JSON.stringify(d)} (${out.dataLossNote})`;
  say(what);
  assert.ok(loss.lastAcked > loss.lastRecovered, `the scenario loses records: ${what}`);
  assert.ok(d.atMostSec !== null, `an upper bound is known: ${what}`);
  assert.ok(d.atLeastSec > 0, `site-b saw a heartbeat after the point, so at least is more than zero: ${what}`);
  assert.ok(d.atLeastSec <= loss.sec + SLACK_SEC, `at least is not more than was lost: ${what}`);
  assert.ok(loss.sec <= d.atMostSec + SLACK_SEC, `at most is not less than was lost: ${what}`);
}

function dbOf(dataDir: string): Database.Database {
  return new Database(join(dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
}

test('bad plans and missing mappings are refused before anything changes', async () => {
  // No mappings yet: the plan needs network and pool mappings for site-a's inventory.
  const r = await sites.cli('b', 'plan', 'apply', await planFile('p.yaml', planYaml()));
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /network user, which has no network mapping here/);
  assert.match(r.stderr, /PLAN_INVALID/);
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  const noPool = await sites.cli('b', 'plan', 'apply', await planFile('p.yaml', planYaml()));
  assert.match(noPool.stderr, /pool default, which has no pool mapping here/);
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');

  const bad: [string, RegExp][] = [
    [planYaml().replace('protectionGroups: [apps]', 'protectionGroups: [nosuch]'), /no protection group nosuch/],
    [
      planYaml().replace('  web:\n', '  ghost:\n    priority: 2\n  web:\n'),
      /ghost is not a VM protected for this site/,
    ],
    [
      planYaml().replace('  web:\n', '  dx1:\n    priority: 2\n  web:\n'),
      /dx1 is in protection group dxg, which the plan does not recover/,
    ],
    [planYaml().replace('dependsOn: [app]', 'dependsOn: [web]'), /line \d+: web depends on itself/],
    [
      planYaml().replace(
        '    priority: 2\n    waitHeartbeat: 240s\n    testIp: { address: 192.168.77.11/24 }',
        '    priority: 2\n    dependsOn: [web]\n    waitHeartbeat: 240s\n    testIp: { address: 192.168.77.11/24 }',
      ),
      /dependency cycle/,
    ],
    [
      planYaml().replace('  db:\n    priority: 1\n', '  db:\n    priority: 1\n    dependsOn: [app]\n'),
      /depends on app of the later priority 2/,
    ],
    [planYaml().replace('192.168.77.10/24', '192.168.77.300/24'), /line \d+/],
    [planYaml().replace('gateway: 10.77.0.1', 'gateway: 10.78.0.1'), /gateway 10.78.0.1 is outside the network/],
    [planYaml().replace('concurrency: 2', 'concurrency: 2\nsurprise: 1'), /line 6: unknown key "surprise"/],
    ['name: [unclosed', /line 1/],
  ];
  for (const [text, want] of bad) {
    const res = await sites.cli('b', 'plan', 'apply', await planFile('bad.yaml', text));
    assert.notEqual(res.code, 0, `accepted: ${text}`);
    assert.match(res.stderr, want);
  }
  assert.deepEqual(await b('plan', 'list'), []);
  const applied = await b<{ vms: { name: string; priority: number }[] }>(
    'plan',
    'apply',
    await planFile('p.yaml', planYaml()),
  );
  assert.deepEqual(
    applied.vms.map((v) => [v.name, v.priority]),
    [
      ['db', 1],
      ['app', 2],
      ['web', 2],
    ],
  );
  // A run with a mode that does not exist, or a point that is not a time, changes nothing.
  assert.match(
    (await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'sideways')).stderr,
    /--mode must be one of/,
  );
  assert.match(
    (await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'test', '--point', 'yesterday')).stderr,
    /not a time/,
  );
  assert.deepEqual(await b('plan', 'history'), []);
});

test('test recovery: isolated network, test IPs, protected VMs and replication untouched; cleanup leaves nothing', async () => {
  const dry = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'test', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /recover db into the test network/);
  assert.match(dry.stdout, /predicted RTO: unknown/);
  const before = await a<ReplicationStatus>('replicate', 'status', 'db');

  // The CLI follows the run until it waits at the prompt before priority 2.
  const started = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'test');
  assert.equal(started.code, 0, started.stderr);
  assert.match(started.stdout, /is waiting: check the database/);
  const runId = /run (run-\S+) is waiting/.exec(started.stdout)![1]!;
  const waiting = await b<PlanRun>('plan', 'report', runId, '--json');
  assert.equal(waiting.state, 'waiting');
  assert.ok(waiting.vms['db']!.rtoSec! > 0, 'priority 1 recovered before the prompt');
  assert.equal(waiting.vms['app']!.recoveredVmId, undefined, 'priority 2 waits for the prompt');
  await b('plan', 'continue', runId);
  const run = await waitRun(runId);
  assert.equal(run.result, 'success', explain(run));

  // The test VMs run in the isolated network with their test IPs; nothing else is on it.
  const bridge = (await b<NetworkView[]>('network', 'list')).find((n) => n.name === 'testnet')!.bridge!;
  const ports = await bridgePorts(bridge);
  assert.equal(ports.length, 3, `bridge ports: ${ports.join(', ')}`);
  assert.ok(
    ports.every((p) => p.startsWith('mmt')),
    `only test VM taps: ${ports.join(', ')}`,
  );
  for (const vm of VMS) {
    assert.equal(run.vms[vm]!.ip, TEST_IPS[vm], `${vm} took its test IP`);
    assert.ok(run.vms[vm]!.rtoSec! > 0);
    assert.ok((await resumedAfter('b', vm)) > 0, `${vm}'s test copy continues the log it had at the point`);
  }
  // Dependency and priorities: web started after app had its heartbeat; app and web after the db step.
  const step = (label: RegExp) => run.steps.find((s) => label.test(s.label))!;
  assert.ok(step(/^recover web/).startedAt! >= step(/^power on app/).endedAt!, 'web waited for app');
  assert.ok(step(/^recover app/).startedAt! >= step(/^after priority 1/).endedAt!, 'priority 2 after priority 1');
  assert.match(step(/^after priority 1/).message!, /db is up/);

  // The protected VMs ran on, and replication still advances into the same replicas.
  for (const vm of VMS) assert.equal((await a<VmView>('vm', 'show', vm)).state, 'running');
  const synced = await a<ReplicationStatus>('replicate', 'sync-now', 'db');
  assert.equal(synced.failures, 0, synced.lastError ?? '');
  assert.ok(synced.lastPointAt! > before.lastPointAt!);

  const clean = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'cleanup');
  assert.equal(clean.code, 0, clean.stderr + clean.stdout);
  assert.deepEqual(
    (await b<VmView[]>('vm', 'list')).map((v) => v.name),
    [],
  );
  assert.deepEqual(await bridgePorts(bridge), []);
  const db = dbOf(sites.b.dataDir);
  try {
    assert.equal((db.prepare('SELECT count(*) AS n FROM replica_holds').get() as { n: number }).n, 0);
    assert.equal((db.prepare('SELECT count(*) AS n FROM recovered_vms').get() as { n: number }).n, 0);
    assert.equal(
      (db.prepare('SELECT count(*) AS n FROM replicas WHERE promoted_at IS NOT NULL').get() as { n: number }).n,
      0,
      'a test promotes nothing',
    );
  } finally {
    db.close();
  }
  await assert.rejects(access(join(sites.b.dataDir, 'pools', 'default', 'recovered', runId)));
  // Idempotent: a second cleanup has nothing to do and succeeds.
  const clean2 = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'cleanup');
  assert.equal(clean2.code, 0, clean2.stderr);
  // The history now predicts a test's RTO.
  assert.match(
    (await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'test', '--dry-run')).stdout,
    /predicted RTO: [\d.]+ s/,
  );
});

test('planned migration: zero data loss, and a site server killed mid-run resumes to a correct end', async () => {
  // Kill site-b's server once the first VM's recovery began (shutdowns and syncs are done); another
  // run of the same VMs waits for the interrupted one.
  const run = await runPlanThroughCrash(sites.b, 'apps-plan', 'planned', async () =>
    assert.match((await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'test')).stderr, /PLAN_BUSY|interrupted/),
  );
  assert.equal(run.result, 'success', explain(run));

  // Every VM recovered once, running at site-b; the protected copies are off and superseded.
  const atB = await b<VmView[]>('vm', 'list');
  assert.deepEqual(atB.map((v) => v.name).sort(), [...VMS].sort());
  for (const v of atB) assert.equal(v.state, 'running');
  for (const vm of VMS) {
    const there = await a<VmView>('vm', 'show', vm);
    assert.equal(there.state, 'stopped');
    // Zero loss: every record the guest acknowledged before its shutdown is in the point used.
    const serial = await readFile(there.serialLog, 'utf8');
    const acked = Math.max(...parseSerialAcks(serial));
    const v = await a<{ report: { consistent: boolean; lastSequence: number } }>(
      'replicate',
      'verify',
      vm,
      '--point',
      run.vms[vm]!.point!.id,
    );
    assert.equal(v.report.consistent, true);
    assert.ok(
      v.report.lastSequence >= acked,
      `${vm}: point holds ${v.report.lastSequence}, guest acknowledged ${acked}`,
    );
    assert.deepEqual(
      [run.vms[vm]!.dataLoss?.atLeastSec, run.vms[vm]!.dataLoss?.atMostSec],
      [0, 0],
      `${vm}: shut down before its last point, it lost nothing`,
    );
    assert.ok(run.vms[vm]!.rtoSec! > 0);
    const start = await sites.cli('a', 'vm', 'start', vm);
    assert.notEqual(start.code, 0);
    assert.match(start.stderr, /was failed over to site site-b.*VM_SUPERSEDED/s);
  }
  // The report: JSON above; HTML with every step.
  const html = join(work, 'planned.html');
  const rep = await sites.cli('b', 'plan', 'report', run.id, '--html', html);
  assert.equal(rep.code, 0, rep.stderr);
  const page = await readFile(html, 'utf8');
  for (const s of run.steps)
    assert.ok(
      page.includes(s.label.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')),
      s.label,
    );
  assert.match(rep.stdout, /RTO [\d.]+ s/);
});

test('reprotect sends only the difference; failback brings the VMs home with zero loss and protects them again', async () => {
  const rp = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'reprotect');
  assert.equal(rp.code, 0, rp.stderr + rp.stdout);
  const reprotect = await b<PlanRun>('plan', 'report', /^run (run-\S+):/m.exec(rp.stdout)![1]!, '--json');
  assert.equal(reprotect.result, 'success', explain(reprotect));
  for (const vm of VMS) {
    const r = reprotect.vms[vm]!.reprotect!;
    assert.equal(
      r.mode,
      'incremental',
      `${vm}: the first reverse cycle sends what the VM wrote since the point (its bitmap), no checksum resync`,
    );
    assert.ok(r.bytesSent < r.diskBytes / 2, `${vm}: sent ${r.bytesSent} of ${r.diskBytes} bytes`);
    // site-b now replicates it to site-a, and the replica there holds its log.
    const v = await b<{ report: { consistent: boolean; lastSequence: number } }>('replicate', 'verify', vm);
    assert.equal(v.report.consistent, true);
  }
  // site-a's superseded copies are gone as VMs: their disks are the seeds now.
  assert.deepEqual(
    (await a<VmView[]>('vm', 'list')).map((v) => v.name).filter((n) => (VMS as readonly string[]).includes(n)),
    [],
  );

  // What each guest acknowledged at site-b before failback shuts it down (read after, from its
  // console, through a handle opened now: the failback turns the VM there into a seed and
  // removes its runtime folder, and an unlinked file stays readable through an open handle).
  const serials = Object.fromEntries(
    await Promise.all(
      VMS.map(async (vm) => [vm, await open((await b<VmView>('vm', 'show', vm)).serialLog, 'r')] as const),
    ),
  );
  const fb = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'failback');
  assert.equal(fb.code, 0, fb.stderr + fb.stdout);
  const failback = await b<PlanRun>('plan', 'report', /^run (run-\S+):/m.exec(fb.stdout)![1]!, '--json');
  assert.equal(failback.result, 'success', explain(failback));
  for (const vm of VMS) {
    const home = await a<VmView>('vm', 'show', vm);
    assert.equal(home.state, 'running', `${vm} runs at site-a again`);
    const acked = Math.max(...parseSerialAcks(await serials[vm]!.readFile('utf8')));
    await serials[vm]!.close();
    const resumed = await resumedAfter('a', vm);
    assert.ok(
      resumed >= acked,
      `${vm}: the log at site-a continues after ${resumed}, site-b's guest acknowledged ${acked}`,
    );
    assert.ok(failback.vms[vm]!.rtoSec! > 0);
    assert.deepEqual([failback.vms[vm]!.dataLoss?.atLeastSec, failback.vms[vm]!.dataLoss?.atMostSec], [0, 0]);
    const r = failback.vms[vm]!.reprotect!;
    assert.equal(r.mode, 'incremental', `${vm}: reprotect after failback goes by the bitmaps too`);
    assert.ok(
      r.bytesSent < r.diskBytes / 2,
      `${vm}: reprotect after failback sent ${r.bytesSent} of ${r.diskBytes} bytes`,
    );
  }
  // Protected at site-a again, replicating to site-b: the plan's next test works as before.
  assert.deepEqual((await a<{ vms: string[] }>('group', 'show', 'apps')).vms.sort(), [...VMS].sort());
  const dry = await sites.cli('b', 'plan', 'run', 'apps-plan', '--mode', 'test', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
});

test('disaster recovery: protected site gone, per-VM errors carried past, points are gap-free prefixes, the report states the loss; its return keeps superseded VMs off', async (t) => {
  const yaml = `name: dx-plan
protectionGroups: [dxg]
vms:
  dx1: { priority: 1, waitHeartbeat: 1s }
  dx2: { priority: 2, waitHeartbeat: 240s }
`;
  const plan = await planFile('dx.yaml', yaml);
  await b('plan', 'apply', plan);
  await a('replicate', 'sync-now', 'dx1');
  await a('replicate', 'sync-now', 'dx2');
  // The guests keep writing after the last point (a few seconds of records)...
  const protectedVms = new Map<string, VmView>();
  for (const vm of ['dx1', 'dx2']) protectedVms.set(vm, await a<VmView>('vm', 'show', vm));
  const ackedNow = async (vm: string) =>
    Math.max(0, ...parseSerialAcks(await readFile(protectedVms.get(vm)!.serialLog, 'utf8')));
  for (const vm of ['dx1', 'dx2']) {
    const from = await ackedNow(vm);
    await sites.a.waitFor(
      `${vm} writes ${3 * RATE} records past the point`,
      async () => ((await ackedNow(vm)) >= from + 3 * RATE ? true : undefined),
      120_000,
    );
  }
  // ...and site-b looks at site-a once more (a plan apply fetches its inventory), so the
  // last heartbeat it knows of is after the point: "at least" is then more than zero.
  await b('plan', 'apply', plan);
  // Then site-a is lost as a power cut loses it: its guests first (nothing is written after
  // this), then its server, then the link. (Writes a site makes after it stops answering are
  // a split brain's, not a loss the recovery site can bound: the array test covers that.)
  const pids = await sites.a.vmPids();
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await sites.a.crashServer();
  await sites.cutLink('blackhole');
  const dry = await sites.cli('b', 'plan', 'run', 'dx-plan', '--mode', 'disaster', '--dry-run');
  assert.match(dry.stdout, /protected site unreachable: its last inventory was used/);
  const r = await sites.cli('b', 'plan', 'run', 'dx-plan', '--mode', 'disaster');
  assert.equal(r.code, 1, `a run with errors exits 1: ${r.stderr}${r.stdout}`);
  const runId = /^run (run-\S+):/m.exec(r.stdout)![1]!;
  const run = await b<PlanRun>('plan', 'report', runId, '--json');
  // dx1 cannot give a heartbeat within 1 s (a TCG boot takes several): a per-VM error the run
  // reports and carries on past, recovering priority 2.
  assert.equal(run.result, 'errors', explain(run));
  assert.match(run.vms['dx1']!.error ?? '', /no heartbeat within 1 s/);
  assert.ok(run.vms['dx2']!.rtoSec! > 0, 'priority 2 was recovered after the error in priority 1');
  assert.equal(run.vms['dx2']!.error, undefined);
  assert.ok(
    run.steps
      .filter((s) => s.kind === 'shutdown')
      .every((s) => s.state === 'skipped' && /did not answer/.test(s.message ?? '')),
  );
  for (const vm of ['dx1', 'dx2']) {
    const out = run.vms[vm]!;
    assert.ok(out.point, `${vm} was recovered from a point`);
    // Offline, as the verifier reads: the recovered VM is powered off first.
    await b('vm', 'stop', vm, '--force');
    const view = await b<VmView>('vm', 'show', vm);
    const disk = view.disks[0]!.path;
    const v = await b<{ consistent: boolean; lastSequence: number | null; gaps: unknown[] }>('verify-writelog', disk);
    assert.equal(v.consistent, true, `${vm}'s recovered disk holds a gap-free prefix`);
    // The true loss, on the write log: the records site-a's guest acknowledged that the
    // recovered disk misses, from the last one it holds to the last one acknowledged.
    const serial = await readFile(protectedVms.get(vm)!.serialLog, 'utf8');
    assert.doesNotMatch(serial, /mamori-wl (full|stopped|error)/, `${vm}'s writer ran until site-a was lost`);
    const loss = trueLoss(
      await writeLogRecords(protectedVms.get(vm)!.disks[0]!.path),
      await writeLogRecords(disk),
      Math.max(...parseSerialAcks(serial)),
    );
    assertWithinBounds(vm, out, loss, (text) => t.diagnostic(text));
  }
  assert.match((await sites.cli('b', 'plan', 'report', runId)).stdout, /data loss between [\d.]+ s and [\d.]+ s/);

  // site-a comes back: it learns that dx1 and dx2 were failed over and keeps them off.
  await sites.restoreLink();
  await sites.a.start();
  for (const vm of ['dx1', 'dx2']) {
    const res = await sites.a.waitFor(
      `${vm} known superseded`,
      async () => {
        const s = await sites.cli('a', 'vm', 'start', vm);
        return /VM_SUPERSEDED/.test(s.stderr) ? s : undefined;
      },
      120_000,
    );
    assert.notEqual(res.code, 0);
    assert.equal((await a<VmView>('vm', 'show', vm)).state === 'running', false);
  }
});

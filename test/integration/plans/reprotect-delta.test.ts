import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TwoSites } from '../../harness/two-sites.js';
import { writerResumedAfter } from '../../harness/writer-resume.js';
import { runProcess } from '../../../src/core/run-process.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { VmFailoverResult } from '../../../src/site-roles/vm-failover.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { VmView } from '../../../src/vms/vm-service.js';

/*
 * Reprotect by delta (issue 19, item 2), real sites in namespaces, test guests writing their
 * logs. After a planned run the old site's disks equal the point: the first reverse cycle
 * sends what the recovered VM wrote since (its bitmap from the point on), not a checksum
 * resync. After a disaster the old disks also hold their own writes after the point: those
 * blocks are sent too, so the old disks end equal to the recovered VM's. An old side whose
 * bitmap was lost (its QEMU killed) falls back to checksums for its blocks only.
 */
let sites: TwoSites;
let work: string;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);
const MiB = 1024 * 1024;
const RECORD = 4096;
const GRANULE = 64 * 1024;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-reprotect-'));
  sites = await TwoSites.create();
  await sites.pairBothWays();
  await b('network', 'create', 'testnet', '--isolated');
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
});
after(async () => {
  await sites?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

async function protectedVm(name: string): Promise<VmView> {
  await a('vm', 'create', name, '--test-guest', '--data-disk', '32M', '--writelog-rate', '10');
  await a('vm', 'start', name);
  await sites.a.waitFor(
    `${name} heartbeat`,
    async () => (await a<VmView>('vm', 'show', name)).lastHeartbeatAt,
    180_000,
  );
  await a('replicate', 'enable', name, '--to', 'site-b', '--rpo', '1h');
  await sites.a.waitFor(
    `${name} first point`,
    async () => (await a<ReplicationStatus>('replicate', 'status', name)).lastPointAt,
    180_000,
  );
  return a<VmView>('vm', 'show', name);
}

async function acks(serialLog: string): Promise<number[]> {
  return parseSerialAcks(await readFile(serialLog, 'utf8').catch(() => ''));
}

function explain(run: PlanRun): string {
  return JSON.stringify(
    run.steps.map((s) => `${s.state} ${s.label} ${s.message ?? ''}`),
    null,
    1,
  );
}

async function runAtB(plan: string, mode: string): Promise<PlanRun> {
  const r = await sites.cli('b', 'plan', 'run', plan, '--mode', mode);
  const id = /^run (run-\S+):/m.exec(r.stdout)?.[1];
  assert.ok(id, r.stderr + r.stdout);
  return b<PlanRun>('plan', 'report', id, '--json');
}

/** The newest point of disk 0 of site-a's replica of a VM (the reverse replica, seeded from its old disks). */
async function reverseReplicaPoint(vmId: string): Promise<string> {
  const db = new Database(join(sites.a.dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db
      .prepare("SELECT id FROM replicas WHERE source_vm_id = ? AND source_site = 'site-b' AND promoted_at IS NULL")
      .get(vmId) as { id: string } | undefined;
    assert.ok(row, `site-a holds a reverse replica of ${vmId}`);
    const dir = join(sites.a.dataDir, 'replicas', row.id, 'disk0');
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { points: { file: string }[] };
    return join(dir, manifest.points.at(-1)!.file);
  } finally {
    db.close();
  }
}

/** qemu-img compare: 0 when both images read the same everywhere. */
async function sameImages(x: string, y: string): Promise<{ same: boolean; out: string }> {
  // Exit 1: the images differ (stdout says where); anything else is an error and throws.
  const r = await runProcess('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', x, y], {
    timeoutMs: 120_000,
    okCodes: [0, 1],
  });
  return { same: r.code === 0, out: r.stdout.trim() };
}

test('planned run, then reprotect: only what the VM wrote at the recovery site crosses; failback holds every acknowledged record', async () => {
  const source = await protectedVm('pl');
  const r = await sites.cli('a', 'vm', 'failover', 'pl', '--planned', '--no-reverse', '--json');
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 3000));
  assert.equal((JSON.parse(r.stdout) as Job & { result: VmFailoverResult }).result.failover.result, 'success');
  const there = await b<VmView>('vm', 'show', 'pl');
  const resumedAtB = await writerResumedAfter(sites.b, 'pl');
  // The VM writes at site-b for a while before reprotect: that is what must cross.
  await sites.b.waitForAcks('40 records at site-b', there.serialLog, 40, { after: resumedAtB, timeoutMs: 240_000 });

  const run = await runAtB('failover-pl', 'reprotect');
  assert.equal(run.result, 'success', explain(run));
  const rp = run.vms['pl']!.reprotect!;
  const ackedAfter = Math.max(...(await acks(there.serialLog)));
  // Every byte the guest may have written at site-b since the point, with a granule of slack at each end of the log.
  const written = (ackedAfter - resumedAtB) * RECORD + 4 * GRANULE;
  assert.equal(rp.mode, 'incremental', `no checksum resync after a planned run: ${JSON.stringify(rp)}`);
  assert.ok(
    rp.bytesSent > 0 && rp.bytesSent <= written,
    `sent ${rp.bytesSent} bytes; the guest wrote at most ${written} at site-b`,
  );
  assert.ok(rp.bytesSent <= (rp.bytesChanged ?? 0) && rp.bytesSent < rp.diskBytes / 16, JSON.stringify(rp));
  const v = await b<{ report: { consistent: boolean; lastSequence: number } }>('replicate', 'verify', 'pl');
  assert.equal(v.report.consistent, true);
  assert.ok(
    v.report.lastSequence >= resumedAtB,
    `the reverse replica holds the log past the point (${v.report.lastSequence} >= ${resumedAtB})`,
  );

  // Failback the same way, asked at site-b: site-a runs it again from the reverse replica.
  await a('network', 'create', 'testnet', '--isolated');
  await a('mapping', 'set', '--peer', 'site-b', 'network', 'user', 'user', '--test', 'testnet');
  await a('mapping', 'set', '--peer', 'site-b', 'pool', 'default', 'default');
  const home = await sites.cli('b', 'vm', 'failover', 'pl', '--planned', '--no-reverse', '--json');
  assert.equal(home.code, 0, home.stderr + home.stdout.slice(0, 3000));
  const ackedAtB = Math.max(...(await acks(there.serialLog)));
  const again = await a<VmView>('vm', 'show', 'pl');
  assert.equal(again.state, 'running');
  assert.equal(again.id, source.id);
  // Record by record: the writer at site-a found every record site-b's guest acknowledged, and the log is whole.
  const resumedAtA = await writerResumedAfter(sites.a, 'pl');
  assert.ok(
    resumedAtA >= ackedAtB,
    `site-a's log continues after ${resumedAtA}; site-b's guest acknowledged ${ackedAtB}`,
  );
  await sites.a.waitForAcks('writes at site-a again', again.serialLog, 1, { after: resumedAtA });
  await a('vm', 'stop', 'pl', '--timeout', '60');
  const ackedAgain = Math.max(...(await acks(again.serialLog)));
  const report = await a<{ consistent: boolean; lastSequence: number }>('verify-writelog', again.disks[0]!.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.ok(report.lastSequence >= ackedAgain, `log holds ${report.lastSequence}, guest acknowledged ${ackedAgain}`);
});

test("disaster, then reprotect: the old site's writes after the point are discarded by delta; a lost bitmap falls back to checksums for that side only", async () => {
  const dz = await protectedVm('dz');
  const dk = await protectedVm('dk');
  await b(
    'plan',
    'apply',
    await (async () => {
      const path = join(work, 'dz.yaml');
      await writeFile(
        path,
        'name: dz-plan\nprotectedSite: site-a\nprotectedVms: [dz, dk]\nvms:\n  dz: { priority: 1, waitHeartbeat: 240s }\n  dk: { priority: 1, waitHeartbeat: 240s }\n',
      );
      return path;
    })(),
  );
  for (const vm of ['dz', 'dk']) await a('replicate', 'sync-now', vm);
  const pointSeq = Math.max(...(await acks(dz.serialLog)));
  // The guests write on after the last point; then site-a is cut off (its VMs run on).
  await sites.a.waitForAcks('writes after the point', dz.serialLog, 1, { after: pointSeq + 20 });
  await sites.cutLink('blackhole');
  const run = await runAtB('dz-plan', 'disaster');
  // warnings: site-a did not answer the shutdown step, as it should not.
  assert.equal(run.result, 'warnings', explain(run));
  const atB = { dz: await b<VmView>('vm', 'show', 'dz'), dk: await b<VmView>('vm', 'show', 'dk') };
  for (const vm of ['dz', 'dk'] as const) {
    const resumed = await writerResumedAfter(sites.b, vm);
    await sites.b.waitForAcks(`${vm} writes at site-b`, atB[vm].serialLog, 10, { after: resumed, timeoutMs: 240_000 });
  }

  // site-a is back: its next cycle is refused, so it learns of the failover and pauses its VMs.
  await sites.restoreLink();
  for (const vm of ['dz', 'dk']) {
    const s = await sites.cli('a', 'replicate', 'sync-now', vm);
    assert.match(s.stderr, /REPLICA_PROMOTED|promoted/, s.stderr + s.stdout);
    await sites.a.waitFor(
      `${vm} paused at site-a`,
      async () => (await a<VmView>('vm', 'show', vm)).state === 'paused' || undefined,
      60_000,
    );
  }
  // dz is powered off cleanly (QEMU stores its bitmap); dk's QEMU is killed (its bitmap is lost).
  await a('vm', 'stop', 'dz', '--force');
  await a('vm', 'kill', 'dk');
  await sites.a.waitFor(
    'dk off',
    async () => ['stopped', 'crashed'].includes((await a<VmView>('vm', 'show', 'dk')).state) || undefined,
    60_000,
  );
  // And one MiB more each, where the guests never write, as a guest writing on would (qemu-io keeps dz's bitmap counting).
  for (const vm of [dz, dk])
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -q -P 0x5a ${24 * MiB} ${MiB}`, vm.disks[0]!.path], {
      timeoutMs: 60_000,
    });

  const rp = await runAtB('dz-plan', 'reprotect');
  assert.equal(rp.result, 'success', explain(rp));
  const z = rp.vms['dz']!.reprotect!;
  assert.equal(z.mode, 'incremental', `dz: both bitmaps known, no checksums: ${JSON.stringify(z)}`);
  assert.ok((z.bytesChanged ?? 0) >= MiB, `dz: the old side's MiB is among the blocks sent: ${JSON.stringify(z)}`);
  // Both guests' log writes since the point (minutes of them at site-a while it was cut off) and the MiB: far from the disk.
  assert.ok(z.bytesChanged! < z.diskBytes / 4 && z.bytesSent <= z.bytesChanged!, `dz: ${JSON.stringify(z)}`);
  const k = rp.vms['dk']!.reprotect!;
  assert.equal(k.mode, 'resync', `dk: the old side lost its bitmap: checksums for it: ${JSON.stringify(k)}`);
  assert.ok(k.bytesSent < k.diskBytes / 4, `dk: only differing chunks sent: ${JSON.stringify(k)}`);

  // The old disks now read as the recovered VMs' disks: stop those, sync once more, compare.
  for (const vm of ['dz', 'dk'] as const) {
    await b('vm', 'stop', vm, '--timeout', '60');
    const acked = Math.max(...(await acks(atB[vm].serialLog)));
    // site-b's own disk first: a replica can only be as whole as the disk it copies.
    const own = await b<{ consistent: boolean }>('verify-writelog', atB[vm].disks[0]!.path);
    assert.equal(own.consistent, true, `${vm}: site-b's disk after the stop: ${JSON.stringify(own)}`);
    const s = await b<ReplicationStatus>('replicate', 'sync-now', vm);
    assert.equal(s.failures, 0, s.lastError ?? '');
    const cmp = await sameImages(await reverseReplicaPoint(atB[vm].id), atB[vm].disks[0]!.path);
    assert.ok(cmp.same, `${vm}: site-a's replica differs from site-b's disk: ${cmp.out}`);
    const v = await b<{ report: { consistent: boolean; lastSequence: number } }>('replicate', 'verify', vm);
    assert.equal(v.report.consistent, true, `${vm}: ${JSON.stringify(v.report)}`);
    assert.ok(
      v.report.lastSequence >= acked,
      `${vm}: the replica holds ${v.report.lastSequence}, site-b's guest acknowledged ${acked}`,
    );
  }
});

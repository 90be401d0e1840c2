import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import type { SiteProcess } from '../../harness/site-process.js';
import { alive, filesUnder, killAtStep } from '../../harness/job-kill-repl.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { MIGRATION_JOB } from '../../../src/migration/live-migration.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { DiskRecord } from '../../../src/store/records/disk-record.js';

/*
 * kill -9 of the source site's server right after each step of a live migration (prepare,
 * mirror, migrate, switchover, finish; each changes something: the destination's empty copy
 * and the TLS object, the disk mirrors, the completed RAM copy, the destination's activation,
 * the source's removal), before the journal records it done. Policy: before switchover
 * (prepare, mirror) roll back (the job fails): the VM runs on at the source in the same QEMU,
 * nothing is left at the destination. From the completed migration on (migrate, switchover,
 * finish) the move is finished and the job succeeds: the VM runs at the destination, exactly
 * once, the source QEMU is gone. (migration-replica-kill-steps.test.ts: the same onto a replica.)
 * One guest serves all five cuts, moving back and forth: each cut's source is the site that
 * runs it then; a clean migration at the end shows the state is sound, and the guest's write
 * log shows no acknowledged write was lost on the way.
 * The destination journals no job (its incoming copy is repaired by IncomingMigrations at its
 * start, and by its lease), so only the source is cut here.
 */
let sites: TwoSites;
const other = (s: 'a' | 'b'): 'a' | 'b' => (s === 'a' ? 'b' : 'a');
const siteName = (s: 'a' | 'b'): string => (s === 'a' ? 'site-a' : 'site-b');

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
});
after(async () => {
  await sites?.destroy();
});

/** Every disk image under the site's pools belongs to a disk row, every VM folder to a VM. */
async function assertNoOrphans(site: SiteProcess, which: 'a' | 'b', tag: string): Promise<void> {
  const disks = await site.cliJson<DiskRecord[]>('disk', 'list');
  const vms = await site.cliJson<VmView[]>('vm', 'list');
  const paths = new Set(disks.map((d) => d.path));
  const files = await filesUnder(site.dataDir);
  const images = files.filter((f) => f.startsWith('pools/'));
  assert.deepEqual(
    images.filter((f) => !paths.has(join(site.dataDir, f))),
    [],
    `${tag} images at site-${which} that no disk row names`,
  );
  const vmDirs = new Set(files.filter((f) => f.startsWith('vms/')).map((f) => f.split('/')[1]!));
  const ids = new Set(vms.map((v) => v.id));
  assert.deepEqual(
    [...vmDirs].filter((id) => !ids.has(id)),
    [],
    `${tag} VM folders at site-${which} of no VM: ${JSON.stringify(files.filter((f) => f.startsWith('vms/')))}`,
  );
}

async function heartbeatGoesOn(which: 'a' | 'b', tag: string): Promise<VmView> {
  const first = await sites.cliJson<VmView>(which, 'vm', 'show', 'fv');
  return sites.site(which).waitFor(
    `${tag} heartbeats at site-${which}`,
    async () => {
      const v = await sites.cliJson<VmView>(which, 'vm', 'show', 'fv');
      return v.state === 'running' && v.lastHeartbeatAt !== first.lastHeartbeatAt ? v : undefined;
    },
    120_000,
  );
}

test('vm-migration: kill -9 after each step rolls back before switchover and finishes after; one VM, nothing left', async () => {
  // 4 records a second: the 32 MiB log (8192 records) lasts over half an hour, longer than the
  // test, so the guest still writes and acknowledges at the end (a full disk acknowledges nothing).
  await sites.cliJson('a', 'vm', 'create', 'fv', '--test-guest', '--data-disk', '32M', '--writelog-rate', '4');
  await sites.cliJson('a', 'vm', 'start', 'fv');
  await sites.a.waitFor(
    'heartbeat',
    async () => (await sites.cliJson<VmView>('a', 'vm', 'show', 'fv')).lastHeartbeatAt,
    240_000,
  );
  let at: 'a' | 'b' = 'a';

  for (const step of MIGRATION_JOB.steps!) {
    const tag = `[${step}]`;
    const src: 'a' | 'b' = at;
    const dst: 'a' | 'b' = other(src);
    const vm: VmView = await sites.cliJson<VmView>(src, 'vm', 'show', 'fv');
    assert.ok(vm.pid && (await alive(vm.pid)), `${tag} the VM runs at site-${src}`);
    const jobsBefore = new Set(
      (await sites.cliJson<Job[]>(src, 'job', 'list', '--kind', MIGRATION_JOB.kind)).map((j) => j.id),
    );
    let destPids: number[] = [];
    const logFrom = sites.site(src).serverLog.length;

    const cut = await killAtStep(
      sites.site(src),
      MIGRATION_JOB.kind,
      step,
      () => sites.cli(src, 'vm', 'migrate', 'fv', '--to', siteName(dst), '--no-wait', '--json'),
      { whileDown: async () => void (destPids = await sites.site(dst).vmPids()) },
    );
    for (const p of destPids) sites.site(dst).trackPid(p);
    assert.ok(destPids.length > 0, `${tag} the destination had its copy's QEMU at the cut: ${cut.stderr}`);

    const jobs: Job[] = (await sites.cliJson<Job[]>(src, 'job', 'list', '--kind', MIGRATION_JOB.kind)).filter(
      (j) => !jobsBefore.has(j.id),
    );
    assert.equal(jobs.length, 1, `${tag} one cut migration job: ${JSON.stringify(jobs)}`);
    const job = jobs[0]!;
    assert.equal(job.steps.find((s) => s.state === 'running')?.name, step, JSON.stringify(job.steps));

    const switched = step !== 'prepare' && step !== 'mirror';
    const runsAt: 'a' | 'b' = switched ? dst : src;
    const goneFrom: 'a' | 'b' = other(runsAt);
    if (switched) {
      // The recovery finished the move: the VM moved as asked, so the job succeeded, saying how.
      assert.equal(job.state, 'succeeded', `${tag} ${JSON.stringify(job)}`);
      assert.equal(job.error, null, tag);
      const r = job.result as { recovered: string; result: { to: string; replicaAware: boolean } };
      assert.match(
        r.recovered,
        new RegExp(
          `\\(step ${step}\\) after the migration completed: the move was finished, the VM runs at ${siteName(dst)} and its copy here was removed`,
        ),
        tag,
      );
      assert.deepEqual(r.result, { to: siteName(dst), replicaAware: false }, tag);
    } else {
      // Rolled back: the work was undone, the job failed saying so.
      assert.equal(job.state, 'failed', `${tag} ${JSON.stringify(job)}`);
      assert.match(
        job.error!.message,
        new RegExp(`\\(step ${step}\\) before switchover: the migration was rolled back, the VM runs on here`),
        tag,
      );
    }

    // Exactly one VM, at the site the policy says, running and writing.
    if (switched) {
      // The destination activates once the source finished the move (or the lease asks it).
      await sites
        .site(dst)
        .waitFor(
          `${tag} the destination runs the VM`,
          async () => (await sites.cliJson<VmView>(dst, 'vm', 'show', 'fv')).state === 'running',
          180_000,
        );
    }
    await sites
      .site(goneFrom)
      .waitFor(
        `${tag} no VM at site-${goneFrom}`,
        async () => (await sites.cliJson<VmView[]>(goneFrom, 'vm', 'list')).length === 0,
        switched ? 30_000 : 180_000,
      );
    const running = await heartbeatGoesOn(runsAt, tag);
    assert.deepEqual(
      (await sites.cliJson<VmView[]>(runsAt, 'vm', 'list')).map((v) => [v.id, v.state]),
      [[vm.id, 'running']],
      `${tag} one VM at site-${runsAt}`,
    );
    if (!switched) {
      assert.equal(running.pid, vm.pid, `${tag} the source QEMU was adopted, not restarted`);
      // The rollback freed what it added to QEMU, its TLS credentials object included.
      assert.doesNotMatch(sites.site(src).serverLog.slice(logFrom), /migration TLS credentials stay in QEMU/, tag);
    }
    // Every QEMU of the cut other than the one that runs the VM is gone.
    for (const pid of [vm.pid, ...destPids].filter((p) => p !== running.pid))
      await sites.site(runsAt).waitFor(`${tag} QEMU ${pid} gone`, async () => !(await alive(pid)), 60_000);
    assert.ok(await alive(running.pid!));
    for (const s of ['a', 'b'] as const) await assertNoOrphans(sites.site(s), s, tag);
    at = runsAt;
  }

  // The same operation, uncut, succeeds from where the last cut left the VM.
  const src: 'a' | 'b' = at;
  const dst: 'a' | 'b' = other(src);
  const done = await sites.cliJson<Job>(src, 'vm', 'migrate', 'fv', '--to', siteName(dst), '--json');
  const final = await sites.site(src).waitFor(
    'the clean migration to end',
    async () => {
      const j = await sites.cliJson<Job>(src, 'job', 'show', done.id);
      return j.state !== 'running' ? j : undefined;
    },
    300_000,
  );
  assert.equal(final.state, 'succeeded', JSON.stringify(final.error));
  assert.deepEqual(await sites.cliJson<VmView[]>(src, 'vm', 'list'), []);
  const vm = await heartbeatGoesOn(dst, '[final]');
  for (const s of ['a', 'b'] as const) await assertNoOrphans(sites.site(s), s, '[final]');

  // The write log holds every write the guest acknowledged, across all the moves. The console
  // file is the last QEMU's, new with the last move: the guest's acks there are waited for first.
  await sites
    .site(dst)
    .waitFor(
      'the guest to acknowledge writes on its last console',
      async () => parseSerialAcks(await readFile(vm.serialLog, 'utf8')).length > 0,
      180_000,
    );
  await sites.cliJson(dst, 'vm', 'stop', 'fv', '--timeout', '60');
  const acks = parseSerialAcks(await readFile(vm.serialLog, 'utf8'));
  const report = await sites.cliJson<{ consistent: boolean; lastSequence: number; tornCount: number }>(
    dst,
    'verify-writelog',
    vm.disks[0]!.path,
  );
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.tornCount, 0);
  assert.ok(
    acks.length > 0 && report.lastSequence >= Math.max(...acks),
    `log holds ${report.lastSequence}, guest acknowledged ${Math.max(...acks)}`,
  );
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { TwoSites } from '../../harness/two-sites.js';
import { alive, killAtStep } from '../../harness/job-kill-repl.js';
import { assertNoStrayQemu, orphans } from '../../harness/job-kill-pools.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { MIGRATION_JOB } from '../../../src/migration/live-migration.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job, RecoveredResult } from '../../../src/jobs/job-journal.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { ReplicaView } from '../../../src/store/records/replica-record.js';

/*
 * kill -9 of the source site's server right after each step from switchover on (migrate, which
 * leaves the migration completed; switchover; finish) of a live migration ONTO THE VM'S REPLICA.
 * The recovery must do what the finish step does: the VM here is quit and kept as the seed of
 * the reversed replication, and the destination replicates the VM back here. (It used to
 * force-delete the VM here: the VM ran unprotected and the seed was lost.) The steps before
 * switchover (prepare, mirror) roll back as in any migration: migration-kill-steps.test.ts.
 * The job ends succeeded: the VM moved, as asked. After each cut: the VM once, at the
 * destination, running and writing; the source QEMU gone; replication runs back to the old
 * source, incremental (its kept disks are the seed), and another cycle succeeds; no orphan at
 * either site. One guest moves back and forth (each move is onto its replica again, since
 * the previous move turned replication around); a clean move at the end shows the state is
 * sound, and the write log holds every record the guest acknowledged through all moves.
 * The replica at the destination becomes the VM by design, so its points are not kept; the
 * points that count are the reverse replica's.
 */
let sites: TwoSites;
const other = (s: 'a' | 'b'): 'a' | 'b' => (s === 'a' ? 'b' : 'a');
const siteName = (s: 'a' | 'b'): string => (s === 'a' ? 'site-a' : 'site-b');
const acked: number[] = [];

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
});
after(async () => {
  await sites?.destroy();
});

/** No orphan file, folder or QEMU at either site (the seeding removes the old VM's runtime folder too). */
async function bothClean(tag: string): Promise<void> {
  for (const s of [sites.a, sites.b]) {
    assert.deepEqual(
      await orphans(s.dataDir),
      { files: [], vmDirs: [], replicaDirs: [] },
      `${tag} ${s.name}: no orphan`,
    );
    await assertNoStrayQemu(s);
  }
}

/** The VM runs at `at` only, with its identity, writing (its acks noted for the end). */
async function runsOnlyAt(at: 'a' | 'b', id: string, tag: string): Promise<VmView> {
  const vm = await sites.site(at).waitFor(
    `${tag} rv running at site-${at}`,
    async () => {
      const v = await sites.cliJson<VmView>(at, 'vm', 'show', 'rv');
      return v.state === 'running' ? v : undefined;
    },
    180_000,
  );
  assert.equal(vm.id, id, tag);
  assert.deepEqual(
    (await sites.cliJson<VmView[]>(at, 'vm', 'list')).map((v) => [v.id, v.state]),
    [[id, 'running']],
    `${tag} one VM at site-${at}`,
  );
  assert.deepEqual(
    (await sites.cliJson<VmView[]>(other(at), 'vm', 'list')).filter((v) => v.id === id),
    [],
    `${tag} site-${other(at)} keeps rv only as a replica`,
  );
  await sites
    .site(at)
    .waitFor(
      `${tag} rv writing at site-${at}`,
      async () => parseSerialAcks(await readFile(vm.serialLog, 'utf8')).length >= 3 || undefined,
      180_000,
    );
  return vm;
}

/** Replication runs from `at` back to the other site, incremental from the kept disks, and a cycle more succeeds. */
async function replicatesBack(at: 'a' | 'b', vmId: string, diskSize: number, tag: string): Promise<void> {
  const back = await sites.cliJson<ReplicationStatus>(at, 'replicate', 'status', 'rv');
  assert.equal(back.to, siteName(other(at)), `${tag} ${JSON.stringify(back)}`);
  assert.ok(back.points >= 1, `${tag} a reverse point: ${JSON.stringify(back)}`);
  // No resync, no full copy: the old disks seeded the replica and the bitmap knows what changed.
  assert.equal(back.lastCycle?.mode, 'incremental', `${tag} ${JSON.stringify(back.lastCycle)}`);
  assert.ok(back.lastCycle!.bytesSent < diskSize / 4, `${tag} the reverse cycle sent ${back.lastCycle!.bytesSent}`);
  const again = await sites.cliJson<ReplicationStatus>(at, 'replicate', 'sync-now', 'rv');
  assert.equal(again.failures, 0, `${tag} ${JSON.stringify(again)}`);
  assert.ok(again.points > back.points || again.lastPointAt !== back.lastPointAt, `${tag} another point`);
  assert.equal(again.lastCycle?.mode, 'incremental', tag);
  // The live replica of the VM (not a retired one: the replica a move started from, kept under a
  // retired name as the lower layers of the next seed) is at the old source, from here.
  const replicas = await sites.cliJson<(ReplicaView & { state: string })[]>(other(at), 'replica', 'list');
  const live = replicas.filter((r) => r.sourceVmId === vmId);
  assert.deepEqual(
    live.map((r) => [r.sourceSite, r.state]),
    [[siteName(at), 'receiving']],
    `${tag} site-${other(at)} holds one replica of rv, from site-${at}: ${JSON.stringify(replicas)}`,
  );
}

test('vm-migration onto its replica: kill -9 after each step from switchover on finishes the move and turns replication around', async () => {
  await sites.cliJson('a', 'vm', 'create', 'rv', '--test-guest', '--data-disk', '32M', '--writelog-rate', '4');
  await sites.cliJson('a', 'vm', 'start', 'rv');
  await sites.a.waitFor(
    'heartbeat',
    async () => (await sites.cliJson<VmView>('a', 'vm', 'show', 'rv')).lastHeartbeatAt,
    240_000,
  );
  // An hour's RPO: no scheduled cycle runs in the test; the reversed replication keeps it.
  await sites.cliJson('a', 'replicate', 'enable', 'rv', '--to', 'site-b', '--rpo', '1h');
  await sites.a.waitFor(
    'first point',
    async () => (await sites.cliJson<ReplicationStatus>('a', 'replicate', 'status', 'rv')).lastPointAt,
    180_000,
  );
  const first = await sites.cliJson<VmView>('a', 'vm', 'show', 'rv');
  const diskSize = first.disks[0]!.sizeBytes;
  let at: 'a' | 'b' = 'a';

  for (const step of ['migrate', 'switchover', 'finish'] as const) {
    const tag = `[${step}]`;
    const src: 'a' | 'b' = at;
    const dst: 'a' | 'b' = other(src);
    const vm = await sites.cliJson<VmView>(src, 'vm', 'show', 'rv');
    assert.ok(vm.pid && (await alive(vm.pid)), `${tag} the VM runs at site-${src}`);
    assert.equal(
      (await sites.cliJson<ReplicationStatus>(src, 'replicate', 'status', 'rv')).to,
      siteName(dst),
      `${tag} the move is onto the VM's replica`,
    );
    acked.push(Math.max(...parseSerialAcks(await readFile(vm.serialLog, 'utf8'))));
    const jobsBefore = new Set(
      (await sites.cliJson<Job[]>(src, 'job', 'list', '--kind', MIGRATION_JOB.kind)).map((j) => j.id),
    );
    let destPids: number[] = [];
    await killAtStep(
      sites.site(src),
      MIGRATION_JOB.kind,
      step,
      () => sites.cli(src, 'vm', 'migrate', 'rv', '--to', siteName(dst), '--no-wait', '--json'),
      { whileDown: async () => void (destPids = await sites.site(dst).vmPids()) },
    );
    for (const p of destPids) sites.site(dst).trackPid(p);
    assert.ok(destPids.length > 0, `${tag} the destination had its copy's QEMU at the cut`);

    // The job is not left running: its recovery finishes the move (the replicating back once
    // this site serves again), and it succeeds.
    const cutJob = await sites.site(src).waitFor<Job>(
      `${tag} the cut job to end`,
      async (): Promise<Job | undefined> => {
        const jobs = (await sites.cliJson<Job[]>(src, 'job', 'list', '--kind', MIGRATION_JOB.kind)).filter(
          (j) => !jobsBefore.has(j.id),
        );
        assert.equal(jobs.length, 1, `${tag} one cut migration job: ${JSON.stringify(jobs)}`);
        return jobs[0]!.state !== 'running' ? jobs[0] : undefined;
      },
      300_000,
    );
    assert.equal(cutJob.state, 'succeeded', `${tag} ${JSON.stringify(cutJob)}`);
    assert.equal(cutJob.steps.find((s) => s.state === 'running')?.name, step, JSON.stringify(cutJob.steps));
    const r = cutJob.result as RecoveredResult;
    assert.match(
      r.recovered,
      new RegExp(
        `\\(step ${step}\\) after the migration completed: the move was finished, the VM runs at ${siteName(dst)} and replicates back here`,
      ),
      tag,
    );
    assert.deepEqual(r.result, { to: siteName(dst), replicaAware: true }, tag);

    // Exactly once, at the destination, running and writing; the source QEMU gone.
    const moved = await runsOnlyAt(dst, vm.id, tag);
    for (const pid of [vm.pid, ...destPids].filter((p) => p !== moved.pid))
      await sites.site(dst).waitFor(`${tag} QEMU ${pid} gone`, async () => !(await alive(pid)), 60_000);
    await replicatesBack(dst, vm.id, diskSize, tag);
    await bothClean(tag);
    at = dst;
  }

  // The same operation, uncut, from where the last cut left the VM: onto its replica again.
  const src: 'a' | 'b' = at;
  const dst: 'a' | 'b' = other(src);
  const start = await sites.cliJson<VmView>(src, 'vm', 'show', 'rv');
  acked.push(Math.max(...parseSerialAcks(await readFile(start.serialLog, 'utf8'))));
  const done = await sites.cli(src, 'vm', 'migrate', 'rv', '--to', siteName(dst), '--json');
  assert.equal(done.code, 0, `${done.stderr}${done.stdout.slice(0, 3000)}`);
  const job = JSON.parse(done.stdout) as Job & { result: { replicaAware: boolean } };
  assert.equal(job.state, 'succeeded');
  assert.equal(job.result.replicaAware, true);
  const last = await runsOnlyAt(dst, start.id, '[final]');
  await replicatesBack(dst, start.id, diskSize, '[final]');
  await bothClean('[final]');

  // Ground truth: every record the guest acknowledged, on every console of its moves, is in the log.
  await sites.cliJson(dst, 'vm', 'stop', 'rv', '--timeout', '60');
  acked.push(Math.max(...parseSerialAcks(await readFile(last.serialLog, 'utf8'))));
  // verify-writelog exits 1 when the log is not consistent: its report says how, so it is read either way.
  const verified = await sites.cli(dst, 'verify-writelog', last.disks[0]!.path, '--json');
  const report = JSON.parse(verified.stdout) as { consistent: boolean; lastSequence: number; tornCount: number };
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.tornCount, 0);
  assert.ok(
    report.lastSequence >= Math.max(...acked),
    `log holds ${report.lastSequence}, guest acknowledged ${acked.join(', ')}`,
  );
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SiteProcess } from '../../harness/site-process.js';
import { assertNoStrayQemu, cutAtStep, filesUnder, orphans } from '../../harness/job-kill-pools.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * Kill -9 at every step of every pool operation (issue 20, item 3). Pool operations recover by
 * `resume`: the cut job is marked interrupted and, at the same start, the operation is taken up
 * where it stopped (PoolService.resumeInterrupted) in a new job that must succeed. A cut whose
 * work was all done (a delete cut after its last step: the pool is gone) ends succeeded. Each cut is
 * at a step's fault point (`job:KIND:STEP`): the step's work done, the journal unaware.
 *
 * Steps cut, all of them (each changes files or rows):
 *   pool-provision: replicas, desktops   (a create, and a resize that grows)
 *   pool-refresh:   refresh
 *   pool-recompose: replicas, desktops, cleanup
 *   pool-rebalance: replicas, desktops, cleanup
 *   pool-resize:    desktops              (a shrink)
 *   pool-delete:    desktops, replicas
 * After each: the pool ready with the right desktops, each once, none pending; every replica
 * used by a desktop; no file under the storage pools that no row names; no VM folder of no
 * VM; no QEMU the site does not list; the master's snapshots (the pool's recovery points) all
 * there; and the next operation of the kind run on that state succeeds. One site, restarted
 * per cut; the desktops are never booted (an operation's work is on files and rows).
 */
let site: SiteProcess;
let snapshots: string[] = [];

before(async () => {
  site = await SiteProcess.create('site-k');
  await site.start();
  await site.cliJson('vm', 'create', 'master', '--test-guest', '--data-disk', '16M', '--memory', '64');
  for (const s of ['v1', 'v2', 'v3', 'v4', 'v5']) await site.cliJson('vm', 'snapshot', 'master', s);
  snapshots = await masterSnapshots();
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
});

async function masterSnapshots(): Promise<string[]> {
  return (await site.cliJson<{ name: string }[]>('vm', 'snapshot', 'list', 'master')).map((s) => s.name).sort();
}

async function ready(pool: string): Promise<PoolView> {
  return site.waitFor(
    `pool ${pool} to resume and end its operation`,
    async () => {
      const p = await site.cliJson<PoolView>('pool', 'show', pool);
      if (p.state === 'error') throw new Error(`pool ${pool} failed: ${p.message}`);
      return p.state === 'ready' ? p : undefined;
    },
    180_000,
  );
}

/** The cut job is interrupted (policy resume) saying it resumes; the job after it (the resumed operation) succeeded. */
async function cutThenResumed(kind: string, pool: string, cutJobs: number): Promise<void> {
  const jobs = (await site.cliJson<Job[]>('job', 'list', '--kind', kind)).filter((j) => j.target === pool);
  assert.ok(
    jobs.every((j) => j.state !== 'running'),
    `no ${kind} job is left running: ${JSON.stringify(jobs.map((j) => [j.id, j.state]))}`,
  );
  const cut = jobs.filter((j) => j.state === 'interrupted');
  assert.equal(cut.length, cutJobs, `one interrupted ${kind} job per cut`);
  for (const j of cut) {
    assert.equal(j.error?.code, 'JOB_INTERRUPTED');
    assert.match(j.error?.message ?? '', new RegExp(`stopped during ${kind} of ${pool}`));
  }
  assert.ok(
    jobs.some((j) => j.state === 'succeeded' && j.createdAt > cut[0]!.createdAt),
    `a ${kind} job after the cut succeeded: ${JSON.stringify(jobs.map((j) => [j.state, j.createdAt]))}`,
  );
}

/** Everything the pool and the site must be after an operation, cut or not. */
async function assertClean(pool: string, size: number, snapshot: string, storage: string[]): Promise<PoolView> {
  const p = await ready(pool);
  assert.equal(p.spec.size, size);
  assert.equal(p.spec.snapshot, snapshot);
  assert.deepEqual(p.spec.storage, storage);
  assert.deepEqual(
    p.desktops.map((d) => d.name),
    Array.from({ length: size }, (_, i) => `${pool}-${i + 1}`),
    'each desktop once, numbered 1..size',
  );
  assert.ok(
    p.desktops.every((d) => d.pending === null),
    JSON.stringify(p.desktops.map((d) => [d.name, d.pending])),
  );
  assert.deepEqual(
    p.replicas.map((r) => [r.storage, r.snapshot]).sort(),
    [...new Set(p.desktops.map((d) => d.storage))].sort().map((s) => [s, snapshot]),
    'one replica of the snapshot per storage pool with desktops, none left unused',
  );
  assert.ok(p.replicas.every((r) => r.desktops > 0));
  const vms = (await site.cliJson<VmView[]>('vm', 'list')).map((v) => v.name);
  assert.equal(new Set(vms).size, vms.length, `no duplicate VM: ${vms.join(', ')}`);
  assert.deepEqual(
    vms.filter((v) => v.startsWith(`${pool}-`)).sort(),
    p.desktops.map((d) => d.name).sort(),
    'no VM of a desktop the pool does not have',
  );
  await assertSiteClean();
  return p;
}

async function assertSiteClean(): Promise<void> {
  const left = await orphans(site.dataDir);
  assert.deepEqual(left, { files: [], vmDirs: [], replicaDirs: [] }, 'nothing on disk that no row names');
  await assertNoStrayQemu(site);
  assert.deepEqual(await masterSnapshots(), snapshots, "the master's snapshots (the pool's points) are all there");
}

/** The inode of a desktop's OS overlay: a refresh makes it anew (a new file renamed over the old). */
async function osInode(vm: string): Promise<number> {
  const view = await site.cliJson<VmView>('vm', 'show', vm);
  return (await stat(view.disks.find((d) => d.name === `${vm}-os0`)!.path)).ino;
}

test('provision cut after its replicas, then after its desktops (a grow), resumes to the right desktops', async () => {
  const create = ['pool', 'create', 'kp', '--master', 'master', '--snapshot', 'v1', '--size', '3', '--name', 'kp-{n}'];
  await cutAtStep(site, 'job:pool-provision:replicas', create);
  await assertClean('kp', 3, 'v1', ['default']);
  await cutThenResumed('pool-provision', 'kp', 1);

  await cutAtStep(site, 'job:pool-provision:desktops', ['pool', 'resize', 'kp', '--size', '4']);
  await assertClean('kp', 4, 'v1', ['default']);
  await cutThenResumed('pool-provision', 'kp', 2);

  // Run again on what recovery left: it makes the one desktop missing, no other.
  const grown = await site.cliJson<Job & { result: { made: number } }>('pool', 'resize', 'kp', '--size', '5');
  assert.equal(grown.result.made, 1);
  await assertClean('kp', 5, 'v1', ['default']);
});

test('refresh cut after its one step resumes and ends; a refresh after it succeeds', async () => {
  const before = await osInode('kp-1');
  await cutAtStep(site, 'job:pool-refresh:refresh', ['pool', 'refresh', 'kp']);
  await assertClean('kp', 5, 'v1', ['default']);
  await cutThenResumed('pool-refresh', 'kp', 1);
  assert.notEqual(await osInode('kp-1'), before, 'kp-1 was refreshed');
  const again = await site.cliJson<Job & { result: { refreshed: number } }>('pool', 'refresh', 'kp');
  assert.equal(again.result.refreshed, 5);
  await assertClean('kp', 5, 'v1', ['default']);
});

test('recompose cut after each of its steps resumes onto the new snapshot; the old replicas go', async () => {
  await cutAtStep(site, 'job:pool-recompose:replicas', ['pool', 'recompose', 'kp', '--snapshot', 'v2']);
  await assertClean('kp', 5, 'v2', ['default']);
  await cutAtStep(site, 'job:pool-recompose:desktops', ['pool', 'recompose', 'kp', '--snapshot', 'v3']);
  await assertClean('kp', 5, 'v3', ['default']);
  await cutAtStep(site, 'job:pool-recompose:cleanup', ['pool', 'recompose', 'kp', '--snapshot', 'v4']);
  await assertClean('kp', 5, 'v4', ['default']);
  await cutThenResumed('pool-recompose', 'kp', 3);
  assert.equal((await filesUnder(join(site.dataDir, 'pools', 'default', 'replicas', 'kp'))).length, 1);
  const again = await site.cliJson<Job & { result: { recomposed: number } }>(
    'pool',
    'recompose',
    'kp',
    '--snapshot',
    'v5',
  );
  assert.equal(again.result.recomposed, 5);
  await assertClean('kp', 5, 'v5', ['default']);
});

test('rebalance cut after each of its steps resumes: desktops where their rows say, no folder left', async () => {
  await cutAtStep(site, 'job:pool-rebalance:replicas', ['pool', 'rebalance', 'kp', '--storage', 'default,second']);
  let p = await assertClean('kp', 5, 'v5', ['default', 'second']);
  assert.ok(p.desktops.some((d) => d.storage === 'second'));
  await cutAtStep(site, 'job:pool-rebalance:desktops', ['pool', 'rebalance', 'kp', '--storage', 'default']);
  p = await assertClean('kp', 5, 'v5', ['default']);
  assert.ok(p.desktops.every((d) => d.storage === 'default'));
  await cutAtStep(site, 'job:pool-rebalance:cleanup', ['pool', 'rebalance', 'kp', '--storage', 'default,second']);
  p = await assertClean('kp', 5, 'v5', ['default', 'second']);
  await cutThenResumed('pool-rebalance', 'kp', 3);
  // Every desktop folder is that of a desktop stored there.
  for (const s of ['default', 'second']) {
    const dirs = new Set(
      (await filesUnder(join(site.dataDir, 'pools', s, 'desktops', 'kp'))).map((f) => f.split('/').at(-2)),
    );
    assert.deepEqual(
      [...dirs].sort(),
      p.desktops
        .filter((d) => d.storage === s)
        .map((d) => d.name)
        .sort(),
    );
  }
  await site.cliJson('pool', 'rebalance', 'kp', '--storage', 'default');
  await assertClean('kp', 5, 'v5', ['default']);
});

test('resize (shrink) cut after its step resumes to the new size; a shrink after it succeeds', async () => {
  await cutAtStep(site, 'job:pool-resize:desktops', ['pool', 'resize', 'kp', '--size', '3']);
  await assertClean('kp', 3, 'v5', ['default']);
  await cutThenResumed('pool-resize', 'kp', 1);
  await site.cliJson('pool', 'resize', 'kp', '--size', '2');
  await assertClean('kp', 2, 'v5', ['default']);
});

test('delete cut after its desktops, or after its replicas, ends with the pool gone and nothing left', async () => {
  await cutAtStep(site, 'job:pool-delete:desktops', ['pool', 'delete', 'kp']);
  await site.waitFor(
    'the resumed delete to end',
    async () => !(await site.cliJson<{ name: string }[]>('pool', 'list')).some((p) => p.name === 'kp'),
    180_000,
  );
  await cutThenResumed('pool-delete', 'kp', 1);

  const made = await site.cliJson<Job>(
    'pool',
    'create',
    'kq',
    '--master',
    'master',
    '--snapshot',
    'v5',
    '--size',
    '2',
    '--name',
    'kq-{n}',
  );
  assert.equal(made.state, 'succeeded', JSON.stringify(made.error));
  await cutAtStep(site, 'job:pool-delete:replicas', ['pool', 'delete', 'kq']);
  assert.deepEqual(await site.cliJson<unknown[]>('pool', 'list'), []);
  const jobs = await site.cliJson<Job[]>('job', 'list', '--kind', 'pool-delete');
  const cut = jobs.find((j) => j.target === 'kq')!;
  // Its work was all done: the job succeeded, saying the pool is gone (not that it resumes).
  assert.equal(cut.state, 'succeeded', JSON.stringify(cut));
  assert.equal(cut.error, null);
  assert.match((cut.result as { recovered: string }).recovered, /had done its work: the pool is gone/);
  assert.equal(jobs.filter((j) => j.target === 'kq').length, 1, 'no job took the finished delete up again');
  assert.deepEqual(
    (await site.cliJson<VmView[]>('vm', 'list')).map((v) => v.name),
    ['master'],
  );
  await assertSiteClean();
  for (const s of ['default', 'second'])
    assert.deepEqual(await filesUnder(join(site.dataDir, 'pools', s, 'desktops')), [], `no desktop file left in ${s}`);
});

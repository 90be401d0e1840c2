import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { runProcess } from '../../../src/core/run-process.js';
import { snapshotLayer } from '../../harness/snapshot-layer.js';
import { SiteProcess } from '../../harness/site-process.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * Pool operations cut by a crash resume at the server's next start, where they stopped.
 * A fault point (MAMORI_FAULT_POINTS) SIGKILLs the server right after its Nth desktop is
 * done, rows written: a cut at a known place, not a timed kill that lands anywhere. The
 * next start finishes the operation without doing again what was done before the cut,
 * and the disks prove it: what each desktop wrote is gone after the refresh, each reads
 * as the new snapshot after the recompose, and each moved desktop sits where its rows say.
 */
const MiB = 1024 * 1024;
const DESKTOPS = ['rp-1', 'rp-2', 'rp-3', 'rp-4', 'rp-5', 'rp-6'];
let site: SiteProcess;

before(async () => {
  site = await SiteProcess.create('site-r');
  await site.start();
  await site.cliJson('vm', 'create', 'master', '--test-guest', '--data-disk', '32M', '--memory', '64');
  await site.cliJson('vm', 'snapshot', 'master', 'v1');
  const job = await site.cliJson<Job>(
    'pool',
    'create',
    'rp',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '6',
    '--name',
    'rp-{n}',
  );
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
});

async function osDisk(name: string): Promise<string> {
  return (await site.cliJson<VmView>('vm', 'show', name)).disks.find((d) => d.name === `${name}-os0`)!.path;
}

/** What the stopped server's database says each desktop still has to do (read straight from its SQLite file). */
function pendingByDesktop(): Map<string, string | null> {
  const db = new Database(join(site.dataDir, 'mamori.db'), { readonly: true });
  try {
    const rows = db
      .prepare(
        'SELECT v.name AS name, d.pending AS pending FROM pool_desktops d JOIN vms v ON v.id = d.vm_id WHERE d.pool = ?',
      )
      .all('rp') as { name: string; pending: string | null }[];
    return new Map(rows.map((r) => [r.name, r.pending]));
  } finally {
    db.close();
  }
}

/** Cuts `args` (a pool operation) with the server killed after `after` desktops, then starts it again. */
async function cutThenRestart(after: number, args: string[]): Promise<void> {
  await site.stopServer();
  await site.start({ MAMORI_FAULT_POINTS: `pool-desktop-done:${after}` });
  const r = await site.cli(...args);
  assert.notEqual(r.code, 0, `the server died under ${args.join(' ')}: ${r.stdout}`);
  assert.ok(await site.serverExited(60_000), 'the fault point killed the server');
}

async function restartAndWaitReady(): Promise<PoolView> {
  await site.start();
  await site.waitFor(
    'the pool operation to resume and end',
    async () => (await site.cliJson<PoolView>('pool', 'show', 'rp')).state === 'ready',
    120_000,
  );
  return site.cliJson<PoolView>('pool', 'show', 'rp');
}

async function sameAs(image: string, reference: string): Promise<boolean> {
  const cmp = await runProcess('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', image, reference], {
    timeoutMs: 60_000,
    okCodes: [0, 1],
  });
  return cmp.code === 0;
}

test('a refresh cut after 3 desktops resumes at the next start and does only the desktops it had not done', async () => {
  // Each desktop's own change, in its OS overlay: refresh must drop it.
  for (const d of DESKTOPS)
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x66 ${1 * MiB} 256k`, await osDisk(d)], {
      timeoutMs: 60_000,
    });
  const before = new Map(await Promise.all(DESKTOPS.map(async (d) => [d, (await stat(await osDisk(d))).ino] as const)));
  await cutThenRestart(3, ['pool', 'refresh', 'rp']);

  const cut = pendingByDesktop();
  const done = DESKTOPS.filter((d) => cut.get(d) === null);
  assert.ok(done.length >= 3 && done.length < DESKTOPS.length, `the cut fell mid-way: done ${done.join(', ')}`);
  assert.ok(
    DESKTOPS.filter((d) => !done.includes(d)).every((d) => cut.get(d) === 'refresh'),
    JSON.stringify([...cut]),
  );
  // The server is down: the paths come from its database, as the rows name them.
  const db = new Database(join(site.dataDir, 'mamori.db'), { readonly: true });
  const paths = new Map(
    (
      db.prepare("SELECT name, path FROM disks WHERE name LIKE 'rp-%-os0'").all() as { name: string; path: string }[]
    ).map((r) => [r.name.replace(/-os0$/, ''), r.path]),
  );
  db.close();
  const atCut = new Map(await Promise.all(done.map(async (d) => [d, (await stat(paths.get(d)!)).ino] as const)));

  const pool = await restartAndWaitReady();
  assert.equal(pool.message, null);
  assert.ok(
    pool.desktops.every((d) => d.pending === null),
    JSON.stringify(pool.desktops),
  );
  for (const d of DESKTOPS) {
    const os = await osDisk(d);
    assert.notEqual((await stat(os)).ino, before.get(d), `${d} was refreshed`);
    if (done.includes(d))
      assert.equal((await stat(os)).ino, atCut.get(d), `${d}, done before the cut, was not done again`);
    const info = JSON.parse(
      (await runProcess('qemu-img', ['info', '-U', '--output=json', os], { timeoutMs: 30_000 })).stdout,
    ) as { 'backing-filename': string };
    assert.ok(await sameAs(os, info['backing-filename']), `${d} reads as its replica again: what it wrote is gone`);
  }
  const jobs = await site.cliJson<Job[]>('job', 'list', '--kind', 'pool-refresh');
  assert.deepEqual(
    jobs.map((j) => j.state).sort(),
    ['interrupted', 'succeeded'],
    'the cut job is marked interrupted (policy resume), the resumed one succeeded',
  );
});

test('a recompose cut mid-way resumes: every desktop reads as the new snapshot and the old replica goes', async () => {
  const master = await site.cliJson<VmView>('vm', 'show', 'master');
  const active = await snapshotLayer(site, master.disks[0]!, 'v1');
  await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x77 0 ${2 * MiB}`, active], { timeoutMs: 60_000 });
  await site.cliJson('vm', 'snapshot', 'master', 'v2');
  await cutThenRestart(2, ['pool', 'recompose', 'rp', '--snapshot', 'v2']);
  const pool = await restartAndWaitReady();
  assert.equal(pool.spec.snapshot, 'v2');
  assert.deepEqual(
    pool.replicas.map((r) => [r.snapshot, r.desktops]),
    [['v2', 6]],
  );
  for (const d of DESKTOPS) assert.ok(await sameAs(await osDisk(d), active), `${d} reads as v2`);
  assert.equal(
    (await readdir(join(site.dataDir, 'pools', 'default', 'replicas', 'rp'))).length,
    1,
    'only the v2 replica is left on disk',
  );
});

test('a rebalance cut between a move and its clean-up resumes: each desktop where its rows say, nothing left behind', async () => {
  await cutThenRestart(1, ['pool', 'rebalance', 'rp', '--storage', 'default,second']);
  const pool = await restartAndWaitReady();
  const where = new Map(pool.desktops.map((d) => [d.name, d.storage]));
  assert.deepEqual(
    [...where.values()].filter((s) => s === 'second').length,
    3,
    'two storage pools with the same free space take three desktops each',
  );
  for (const s of ['default', 'second']) {
    const folders = (await readdir(join(site.dataDir, 'pools', s, 'desktops', 'rp'))).sort();
    assert.deepEqual(
      folders,
      DESKTOPS.filter((d) => where.get(d) === s),
      `${s} holds the folders of its desktops only`,
    );
  }
  for (const d of DESKTOPS) {
    const vm = await site.cliJson<VmView>('vm', 'show', d);
    assert.ok(
      vm.disks.every((x) => x.path.startsWith(join(site.dataDir, 'pools', where.get(d)!))),
      JSON.stringify(vm.disks),
    );
    const info = JSON.parse(
      (await runProcess('qemu-img', ['info', '-U', '--output=json', await osDisk(d)], { timeoutMs: 30_000 })).stdout,
    ) as { 'backing-filename': string };
    assert.ok(
      info['backing-filename'].startsWith(join(site.dataDir, 'pools', where.get(d)!, 'replicas')),
      `${d} sits on the replica of its own storage pool`,
    );
  }
  const deleted = await site.cliJson<Job>('pool', 'delete', 'rp');
  assert.equal(deleted.state, 'succeeded');
});

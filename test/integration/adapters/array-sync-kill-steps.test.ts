import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { TwoSites } from '../../harness/two-sites.js';
import { ZfsFuse, type TestPool } from '../../harness/zfs-fuse.js';
import { killAtStep } from '../../harness/job-kill-repl.js';
import { runProcess } from '../../../src/core/run-process.js';
import { POINTS_KEPT, isPoint } from '../../../src/adapters/zfs/zfs-points.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { ProtectionGroupView } from '../../../src/plans/protection-groups.js';

/*
 * Kill -9 at every step of an array-based group's sync (sync: the adapter's syncOnce, a point
 * on the source array sent to the peer array; record: the point written to the group's sync
 * state), each a fault point `job:array-sync:STEP` that SIGKILLs the server after the step's
 * work and before the journal says done. The arrays are two zfs-fuse pools with the bundled
 * ZFS adapter (as test/integration/plans/array-recovery-plans.test.ts sets them up), the group
 * at site-a protects one replicated dataset for site-b, with no RPO (no scheduled sync runs
 * between the cuts). Policy rollback: after the restart the job is failed with a message, the
 * group's sync state counts the failed attempt, and its recorded point agrees with the arrays:
 * the recorded point exists on both arrays (never a point recorded that is not there), and any
 * snapshot newer than it is one of the adapter's own points, which its retention owns (the
 * newest POINTS_KEPT points on each side, older ones pruned at the next sync): a cut after
 * `sync` leaves exactly one such point, made and sent but not recorded. The next sync succeeds
 * and records the newest point both arrays hold. No VM is involved, so none can be duplicated.
 */
let sites: TwoSites;
let zfs: ZfsFuse;
let poolA: TestPool;
let poolB: TestPool;
let source: string;
let target: string;

const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);

async function zfsCmd(...args: string[]): Promise<string> {
  return (await runProcess('zfs', args, { timeoutMs: 120_000 })).stdout.trim();
}

/** A dataset's snapshot names, oldest first (creation txg never goes backwards in a pool). */
async function snapshots(dataset: string): Promise<string[]> {
  // As the adapter reads them (zfs-commands.ts): zfs-fuse's `zfs list` takes no -p.
  const text = await zfsCmd('get', '-Hp', '-r', '-d', '1', '-o', 'name,value', 'createtxg', dataset);
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'))
    .filter(([name]) => name!.startsWith(`${dataset}@`))
    .sort((x, y) => Number(x[1]) - Number(y[1]))
    .map(([name]) => name!.slice(dataset.length + 1));
}

async function syncState(): Promise<NonNullable<ProtectionGroupView['array']>['sync']> {
  return (await a<ProtectionGroupView>('group', 'show', 'store')).array!.sync;
}

/**
 * The group's record agrees with the arrays: the recorded point is on both; every snapshot on
 * either side is one of the adapter's points, at most POINTS_KEPT of them; and the ones newer
 * than the recorded point (made by a sync whose record the cut lost) are returned.
 */
async function unrecordedPoints(recorded: string): Promise<{ source: string[]; target: string[] }> {
  const out = { source: [] as string[], target: [] as string[] };
  for (const [side, dataset] of [
    ['source', source],
    ['target', target],
  ] as const) {
    const snaps = await snapshots(dataset);
    assert.ok(snaps.includes(recorded), `the recorded point ${recorded} is on ${dataset}: ${snaps.join(', ')}`);
    assert.deepEqual(
      snaps.filter((s) => !isPoint(s)),
      [],
      `only the adapter's points on ${dataset}`,
    );
    assert.ok(snaps.length <= POINTS_KEPT, `retention bounds ${dataset}: ${snaps.join(', ')}`);
    out[side] = snaps.slice(snaps.indexOf(recorded) + 1);
  }
  return out;
}

before(async () => {
  zfs = await ZfsFuse.acquire();
  poolA = await zfs.createPool('a', 256);
  poolB = await zfs.createPool('b', 256);
  source = `${poolA.name}/vmstore`;
  target = `${poolB.name}/vmstore`;
  await zfsCmd('create', source);
  // Replication starts with the source naming its peer (docs/adapters.md, "Starting replication").
  await zfsCmd('set', `mamori:peer=${target}`, source);
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
  // No --rpo: only the test's own syncs run, so each cut meets the sync it started.
  await a('group', 'create', 'store', '--array', 'store-a', '--device', 'vmstore', '--to', 'site-b');
  const first = await a<{ devices: { id: string; point: string }[] }>('group', 'sync', 'store');
  assert.equal((await syncState()).lastPoint, first.devices[0]!.point);
});

after(async () => {
  await sites?.destroy();
  await zfs?.release();
});

/** The group's array-sync jobs at site-a, newest first. */
async function syncJobs(): Promise<Job[]> {
  return (await a<Job[]>('job', 'list'))
    .filter((j) => j.kind === 'array-sync' && j.target === 'store')
    .sort((x, y) => y.createdAt.localeCompare(x.createdAt));
}

for (const step of ['sync', 'record']) {
  test(`array-sync cut after '${step}': failed with a message; the recorded point agrees with both arrays`, async () => {
    const before = await syncState();
    const pointsBefore = await snapshots(source);
    const jobsBefore = new Set((await syncJobs()).map((j) => j.id));
    await killAtStep(sites.a, 'array-sync', step, () => sites.cli('a', '--json', 'group', 'sync', 'store'));

    const job = (await syncJobs()).find((j) => !jobsBefore.has(j.id));
    assert.ok(job, 'the cut sync has its job');
    assert.equal(job.steps.find((s) => s.name === step)?.state, 'running', 'cut after the work, before the journal');
    assert.equal(job.state, 'failed', JSON.stringify(job));
    assert.match(job.error?.message ?? '', /stopped during a sync of group store/);

    const after = await syncState();
    // The failed attempt is counted, as a sync that failed by itself is (after the record step
    // had reset the count with its point).
    assert.equal(after.failures, step === 'sync' ? before.failures + 1 : 1);
    assert.match(after.lastError ?? '', /stopped during a sync of group store/);
    // The point the record step wrote stays: it is on both arrays. Cut before it, the old one stays recorded.
    const unrecorded = await unrecordedPoints(after.lastPoint!);
    if (step === 'sync') {
      assert.equal(after.lastPoint, before.lastPoint, 'the record step never ran');
      assert.equal(unrecorded.source.length, 1, `one point made and not recorded: ${unrecorded.source.join(', ')}`);
      assert.deepEqual(unrecorded.target, unrecorded.source, 'and sent: the peer array holds it too');
    } else {
      assert.notEqual(after.lastPoint, before.lastPoint, 'the record step wrote the new point');
      assert.deepEqual(unrecorded, { source: [], target: [] }, 'the recorded point is the newest on both arrays');
    }
    // No point held before the cut went but those retention prunes: older than all it keeps, beyond POINTS_KEPT.
    const now = await snapshots(source);
    const gone = pointsBefore.filter((p) => !now.includes(p));
    if (gone.length > 0) {
      assert.equal(now.length, POINTS_KEPT, `pruned only beyond the count: ${gone.join(', ')}`);
      assert.deepEqual(gone, pointsBefore.slice(0, gone.length), 'the oldest ones');
    }
    assert.ok(now.includes(before.lastPoint!), 'the point recorded before the cut is still there');
  });
}

test('after every cut, the next sync succeeds and records the newest point both arrays hold', async () => {
  const r = await a<{ devices: { id: string; point: string; bytesSent: number }[] }>('group', 'sync', 'store');
  const point = r.devices[0]!.point;
  const s = await syncState();
  assert.equal(s.lastPoint, point);
  assert.equal(s.failures, 0);
  assert.equal(s.lastError, null);
  assert.deepEqual(await unrecordedPoints(point), { source: [], target: [] });
  // Retention pruned what the cuts left beyond its count.
  assert.ok((await snapshots(source)).length <= POINTS_KEPT);
  assert.ok((await snapshots(target)).length <= POINTS_KEPT);
  assert.equal((await syncJobs())[0]!.state, 'succeeded');
  assert.deepEqual(
    (await a<Job[]>('job', 'list')).filter((j) => j.state === 'running').map((j) => `${j.kind} ${j.id}`),
    [],
  );
});

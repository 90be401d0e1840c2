import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { alive, filesUnder, killAtStep, livePidFiles } from '../../harness/job-kill-repl.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { CYCLE_STEPS } from '../../../src/replication/replication-cycle.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';

/*
 * kill -9 of the source site's server right after each step of a replication cycle (fleece,
 * begin, copy, commit, complete: every one changes something, in QEMU or at the recovery
 * site), before the journal records it done. The policy is rollback: the restart closes the
 * job as failed saying what it undid; before the commit the cycle aborts (the bitmap and the
 * last good point are kept), after it the source moves on to the committed point. Either
 * way: the VM runs on in the same QEMU, no fleecing file or daemon is left at either site,
 * every point listed before the cut is still there, and the next cycle is incremental.
 * At the end every point verifies and the newest holds every write the guest acknowledged.
 * One running guest serves all five cuts.
 */
let sites: TwoSites;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const KIND = 'replication-cycle';

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
});
after(async () => {
  await sites?.destroy();
});

interface Point {
  id: string;
  time: string;
}
interface Verified {
  point: { id: string };
  report: { consistent: boolean; lastSequence: number | null; tornCount?: number };
}

const points = () => a<Point[]>('replicate', 'points', 'fv');

async function verify(pointId?: string): Promise<number> {
  const v = await a<Verified>('replicate', 'verify', 'fv', ...(pointId ? ['--point', pointId] : []));
  assert.equal(v.report.consistent, true, `point ${v.point.id}: ${JSON.stringify(v.report)}`);
  return v.report.lastSequence ?? 0;
}

/** The recovery site's replica files: committed layers, a staging overlay of an open cycle, the rest. */
async function replicaFiles(): Promise<{ layers: string[]; staging: string[] }> {
  const files = await filesUnder(join(sites.b.dataDir, 'replicas'));
  return {
    layers: files.filter((f) => /(^|\/)p\d+\.qcow2$/.test(f)),
    staging: files.filter((f) => /staging-/.test(f)),
  };
}

test('replication-cycle: kill -9 after each step rolls back or settles per the journal; nothing lost, nothing left', async () => {
  // 4 records a second: the 32 MiB log (8192 records) lasts longer than the test, so each
  // next point can be seen to hold newer writes (a full disk writes nothing more).
  await a('vm', 'create', 'fv', '--test-guest', '--data-disk', '32M', '--writelog-rate', '4');
  await a('vm', 'start', 'fv');
  await sites.a.waitFor('heartbeat', async () => (await a<VmView>('vm', 'show', 'fv')).lastHeartbeatAt, 240_000);
  // A long RPO keeps the timer out of the way: every cycle here is started by hand.
  await a('replicate', 'enable', 'fv', '--to', 'site-b', '--rpo', '1h', '--points', '24');
  await sites.a.waitFor(
    'first point',
    async () => (await a<ReplicationStatus>('replicate', 'status', 'fv')).lastPointAt,
    240_000,
  );
  const vm = await a<VmView>('vm', 'show', 'fv');
  assert.ok(vm.pid && (await alive(vm.pid)));
  const workDir = join(sites.a.dataDir, 'vms', vm.id, 'replication');
  let lastSeq = await verify();

  for (const step of CYCLE_STEPS) {
    const before = await points();
    const statusBefore = await a<ReplicationStatus>('replicate', 'status', 'fv');
    const filesBefore = await filesUnder(sites.a.dataDir);
    const layersBefore = (await replicaFiles()).layers;
    const jobsBefore = new Set((await a<Job[]>('job', 'list', '--kind', KIND)).map((j) => j.id));

    const cut = await killAtStep(sites.a, KIND, step, () => sites.cli('a', 'replicate', 'sync-now', 'fv'));
    assert.notEqual(cut.code, 0, `[${step}] the CLI saw its server die: ${cut.stdout}`);

    // The job: closed as failed, saying what the recovery did.
    const jobs = (await a<Job[]>('job', 'list', '--kind', KIND)).filter((j) => !jobsBefore.has(j.id));
    assert.equal(jobs.length, 1, `[${step}] one cut cycle job: ${JSON.stringify(jobs)}`);
    const job = jobs[0]!;
    assert.equal(job.state, 'failed', `[${step}] ${JSON.stringify(job)}`);
    assert.equal(job.steps.find((s) => s.state === 'running')?.name, step, JSON.stringify(job.steps));
    const committed = step === 'commit' || step === 'complete';
    assert.match(
      job.error!.message,
      committed
        ? new RegExp(`site server stopped during this job \\(step ${step}\\) after the recovery site committed point`)
        : new RegExp(
            `site server stopped during this job \\(step ${step}\\); the cycle was aborted.*last good point is kept`,
          ),
      `[${step}]`,
    );

    // The VM: one, the same QEMU adopted by the new server, still running.
    const vms = await a<VmView[]>('vm', 'list');
    assert.deepEqual(
      vms.map((v) => [v.id, v.state, v.pid]),
      [[vm.id, 'running', vm.pid]],
      `[${step}] the VM outlived its server, once`,
    );
    assert.ok(await alive(vm.pid!));

    // No orphan at the source: no fleecing overlay or socket, no file that was not there before.
    assert.deepEqual(
      (await readdir(workDir)).filter((f) => f.endsWith('.qcow2') || f.endsWith('.sock')),
      [],
      `[${step}] fleecing machinery left`,
    );
    assert.deepEqual(await filesUnder(sites.a.dataDir), filesBefore, `[${step}] files at the source`);
    assert.deepEqual(
      (await livePidFiles(sites.a.dataDir)).filter((p) => p.pid !== vm.pid),
      [],
      `[${step}] no process of the cut cycle runs at the source`,
    );

    // No lost point: every point listed before is still there; a committed one was added.
    const afterPoints = await points();
    for (const p of before)
      assert.ok(
        afterPoints.some((q) => q.id === p.id),
        `[${step}] point ${p.id} lost: ${JSON.stringify(afterPoints)}`,
      );
    assert.equal(afterPoints.length, before.length + (committed ? 1 : 0), `[${step}] ${JSON.stringify(afterPoints)}`);
    const status = await a<ReplicationStatus>('replicate', 'status', 'fv');
    assert.equal(status.generation, statusBefore.generation! + (committed ? 1 : 0), `[${step}] generation`);
    // The newest point before the cut still reads as a gap-free log.
    assert.ok((await verify(before.at(-1)!.id)) >= lastSeq);
    // The recovery site drops the aborted cycle's staging (asked by the restarted source).
    const replicaState = async () => ({
      staging: (await replicaFiles()).staging,
      daemons: await livePidFiles(join(sites.b.dataDir, 'replicas')),
    });
    await sites.b
      .waitFor(
        `[${step}] the recovery site's cut cycle closed`,
        async () => {
          const r = await replicaState();
          return r.staging.length === 0 && r.daemons.length === 0;
        },
        60_000,
      )
      .catch(async (e: unknown) =>
        assert.fail(
          `${(e as Error).message.split('\n')[0]}: ${JSON.stringify(await replicaState())}\nsite-a log:\n${sites.a.serverLog.slice(-3000)}`,
        ),
      );

    // The same operation again succeeds, incrementally (the bitmap was kept or moved on, never lost).
    const next = await sites.cli('a', 'replicate', 'sync-now', 'fv', '--json');
    if (next.code !== 0) {
      const list = await sites.cli('a', 'job', 'list', '--kind', KIND);
      assert.fail(`[${step}] the next cycle failed: ${next.stderr}\n${list.stdout}\n${sites.a.serverLog.slice(-4000)}`);
    }
    const s = JSON.parse(next.stdout) as ReplicationStatus;
    assert.equal(s.failures, 0, s.lastError ?? '');
    assert.equal(s.lastCycle!.mode, 'incremental', `[${step}] ${JSON.stringify(s.lastCycle)}`);
    const now = await verify();
    assert.ok(now > lastSeq, `[${step}] the next point holds newer writes (${now} > ${lastSeq})`);
    lastSeq = now;
    // At the recovery site: one layer per point and disk more than before, no staging.
    const rep = await replicaFiles();
    assert.deepEqual(rep.staging, [], `[${step}] staging left at the recovery site`);
    const added = rep.layers.filter((f) => !layersBefore.includes(f));
    const disks = new Set(rep.layers.map((f) => f.split('/').slice(0, -1).join('/'))).size;
    assert.equal(added.length, (committed ? 2 : 1) * disks, `[${step}] layers added: ${JSON.stringify(added)}`);
  }

  // Every point is still readable, and the last one, taken of the stopped VM, holds every
  // write the guest acknowledged (the write log is the ground truth).
  for (const p of await points()) await verify(p.id);
  await a('vm', 'stop', 'fv', '--timeout', '60');
  const acks = parseSerialAcks(await readFile(vm.serialLog, 'utf8'));
  const fin = await a<ReplicationStatus>('replicate', 'sync-now', 'fv');
  assert.equal(fin.failures, 0, fin.lastError ?? '');
  const newest = await verify();
  assert.ok(
    acks.length > 0 && newest >= Math.max(...acks),
    `replica holds ${newest}, guest acknowledged ${Math.max(...acks)}`,
  );
});

import assert from 'node:assert/strict';
import type { TwoSites } from './two-sites.js';
import { assertNoStrayQemu, orphans } from './job-kill-pools.js';
import type { Job } from '../../src/jobs/job-journal.js';
import type { PlanRun } from '../../src/plans/run-journal.js';
import type { VmView } from '../../src/vms/vm-service.js';

/*
 * What every plan-run kill test checks after a cut (plan-run-kill-steps, array-plan-kill-steps):
 * the cut run is interrupted and alone, no VM is there twice, nothing is left that no row owns.
 */

/** A run's steps, one line each, for an assertion's message. */
export function explain(run: PlanRun): string {
  return JSON.stringify(
    run.steps.map((s) => `${s.state} ${s.kind} ${s.label} ${s.message ?? ''}`),
    null,
    1,
  );
}

/** No VM twice at either site, and exactly `atB` / `atA` VMs named `vm` at site-b / site-a. */
export async function noDuplicate(sites: TwoSites, vm: string, atB: number, atA: number): Promise<void> {
  for (const [s, want] of [
    ['a', atA],
    ['b', atB],
  ] as const) {
    const names = (await sites.cliJson<VmView[]>(s, 'vm', 'list')).map((v) => v.name);
    assert.equal(new Set(names).size, names.length, `site-${s}: no VM twice: ${names.join(', ')}`);
    assert.equal(names.filter((n) => n === vm).length, want, `site-${s}: ${want} ${vm}: ${names.join(', ')}`);
  }
}

/**
 * No orphan at either site: no file no row names (a reprotected VM's old disks are named by the
 * manifest of the replica they seed), no runtime folder of a VM gone, no stray QEMU.
 */
export async function bothClean(sites: TwoSites): Promise<void> {
  for (const s of [sites.a, sites.b]) {
    assert.deepEqual(await orphans(s.dataDir), { files: [], vmDirs: [], replicaDirs: [] }, `${s.name}: no orphan`);
    await assertNoStrayQemu(s);
  }
}

/** The one interrupted plan-run job at site-b (the cut run), none running; its run, interrupted. */
export async function interruptedRun(sites: TwoSites): Promise<PlanRun> {
  const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);
  const jobs = await b<Job[]>('job', 'list', '--kind', 'plan-run', '--state', 'interrupted');
  assert.equal(jobs.length, 1, JSON.stringify(jobs));
  const job = jobs[0]!;
  assert.equal(job.error?.code, 'JOB_INTERRUPTED', JSON.stringify(job.error));
  assert.equal((await b<Job[]>('job', 'list', '--kind', 'plan-run', '--state', 'running')).length, 0);
  const run = await b<PlanRun>('plan', 'report', job.id, '--json');
  assert.equal(run.state, 'interrupted', explain(run));
  return run;
}

/**
 * Chained cuts of the plan runs site-b runs: each cut arms site-b with `job:plan-run:STEP`, runs
 * `args` (a plan run or resume), waits for the server to die at the point, and starts it again
 * armed only with the next cut's point, which nothing passes before that cut's resume: so what
 * the start recovers and the checks see are an unarmed server's, and each cut saves a stop and
 * a start. Returns the interrupted run.
 */
export class ChainedCuts {
  #sites: TwoSites;
  #armed: string | undefined;

  constructor(sites: TwoSites) {
    this.#sites = sites;
  }

  async cut(step: string, args: string[], next?: string): Promise<PlanRun> {
    const b = this.#sites.b;
    const point = `job:plan-run:${step}`;
    if (this.#armed !== step) {
      await b.stopServer();
      await b.start({ MAMORI_FAULT_POINTS: point });
    }
    const r = await b.cli(...args);
    // The CLI follows the run until it ends or its server dies: a server still up never met the
    // point (the step failed or did not run; what the CLI printed says which).
    assert.ok(
      await b.serverExited(30_000),
      `${point} did not kill the server under mamori ${args.join(' ')}: ${r.stdout.slice(-2000)}${r.stderr}`,
    );
    this.#armed = next;
    await b.start(next ? { MAMORI_FAULT_POINTS: `job:plan-run:${next}` } : {});
    return interruptedRun(this.#sites);
  }
}

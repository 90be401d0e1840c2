import type { StoreHandle } from '../store/store-handle.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { defineJobKind } from '../jobs/job-kind.js';
import type { PlanService } from '../plans/plan-service.js';
import type { PlanRunner } from '../plans/plan-runner.js';
import type { PlanRun } from '../plans/run-journal.js';
import { summarizeRun, type RunSummary } from '../plans/plan-report.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';

/** Where the failover goes and the recovery site's runs as last seen (a restart says where to follow them). */
export interface FailoverJobContext {
  vm: string;
  to: string;
  plan?: string;
  failover?: RunSummary;
  reprotect?: RunSummary;
}

const runSummarySchema = { type: 'object', required: ['run', 'state'], properties: { run: { type: 'string' } } };

/**
 * Rollback, with nothing here to undo: the runs are the recovery site's, journalled and
 * resumable there, and go on without this side. The cut job ends failed, saying what the runs
 * did and what is left to run (the reprotect, when it had not started): nothing takes this job
 * up again, so it is not `interrupted`.
 */
export const FAILOVER_JOB = defineJobKind<FailoverJobContext>({
  kind: 'vm-failover',
  policy: 'rollback',
  steps: null,
  summary: "One VM's planned failover (and reprotect) run by the recovery site, followed from here",
  context: {
    version: 1,
    schema: {
      type: 'object',
      required: ['vm', 'to'],
      properties: {
        vm: { type: 'string' },
        to: { type: 'string' },
        plan: { type: 'string' },
        failover: runSummarySchema,
        reprotect: runSummarySchema,
      },
    },
  },
});
const POLL_MS = 2_000;

/** The plan a one-VM failover runs at the recovery site: made (or remade) for it. */
export function failoverPlanName(vm: string): string {
  const name = `failover-${vm}`;
  if (name.length > 63)
    throw new MamoriError(
      'INVALID_INPUT',
      `${vm} is too long a name for the one-VM shortcut (plan names are at most 63 characters); write a recovery plan that names it in protectedVms`,
    );
  return name;
}

export interface VmFailoverResult {
  vm: string;
  to: string;
  plan: string;
  failover: RunSummary;
  reprotect: RunSummary | null;
}

/**
 * `mamori vm failover VM --planned`, Hyper-V's planned failover of one VM, as a shortcut to
 * recovery plans: asked at the site where the VM runs, it has the site holding the VM's
 * replica apply a plan that recovers just this VM and run it in planned mode (guest shutdown,
 * final sync, promote, power-on there, no data lost), then, unless told not to, in reprotect
 * mode (this site's copy seeds the replica that now runs the other way). The runs are the
 * recovery site's, journalled and resumable there; this side is a job that follows them.
 */
export class VmFailover {
  #replications: ReplicationRepo;
  #vms: VmService;
  #peers: SitePeers;
  #jobs: JobJournal;
  #log: Logger;

  constructor(deps: { db: StoreHandle; vms: VmService; peers: SitePeers; jobs: JobJournal; log: Logger }) {
    this.#replications = new ReplicationRepo(deps.db);
    this.#vms = deps.vms;
    this.#peers = deps.peers;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    // The runs are the recovery site's and go on without us: say what became of them and what is left.
    // When the runs recorded had done it all (the failover, and the reprotect where asked), the
    // failover is done: the job succeeded, with that message. Otherwise it fails saying what is left.
    deps.jobs.define(FAILOVER_JOB, async (job, c) => {
      const message = cutFailoverMessage(job, c);
      const ok = (r?: RunSummary): boolean =>
        r?.state === 'done' && (r.result === 'success' || r.result === 'warnings');
      const done = job.steps.some((s) => s.name === 'reprotect') ? ok(c?.reprotect) : ok(c?.failover);
      if (message === undefined || !done || !c?.failover) return message;
      const result: VmFailoverResult = {
        vm: c.vm,
        to: c.to,
        plan: c.plan ?? failoverPlanName(c.vm),
        failover: c.failover,
        reprotect: c.reprotect ?? null,
      };
      return { finished: message, result };
    });
  }

  async start(vmName: string, input: { planned: boolean; reverse?: boolean; point?: string }): Promise<Job> {
    if (!input.planned) {
      throw new MamoriError(
        'INVALID_INPUT',
        "only a planned failover starts here (both sites up: the VM is shut down and synced first). When this site is gone, run the recovery site's plan in disaster mode there (mamori plan run PLAN --mode disaster); to move a running VM with no downtime, use mamori vm migrate",
      );
    }
    if (input.point !== undefined && Number.isNaN(Date.parse(input.point)))
      throw new MamoriError(
        'INVALID_INPUT',
        `--point ${JSON.stringify(input.point)} is not a time (ISO 8601, e.g. 2026-11-27T09:00:00Z)`,
      );
    const pointTime = input.point === undefined ? undefined : new Date(input.point).toISOString();
    const vm = await this.#vms.get(vmName);
    const rep = await this.#replications.find(vm.id);
    if (!rep)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `${vmName} is not replicated, so no site holds a replica to fail over to; enable it first: mamori replicate enable ${vmName} --to SITE`,
      );
    const superseded = await this.#vms.repo.findSuperseded(vm.id);
    if (superseded)
      throw new MamoriError(
        'VM_SUPERSEDED',
        `${vmName} was already failed over to ${superseded.bySite}; it runs there now`,
      );
    const plan = failoverPlanName(vmName);
    const active = (await this.#jobs.list({ kind: FAILOVER_JOB.kind, target: `vm:${vm.id}`, limit: 1 }))[0];
    if (active?.state === 'running')
      throw new MamoriError('VM_INVALID_STATE', `${vmName} is already failing over (job ${active.id})`);
    await this.#peers.client(rep.peer);
    const reverse = input.reverse ?? true;
    const job = await this.#jobs.create(FAILOVER_JOB, `vm:${vm.id}`, {
      steps: reverse ? ['failover', 'reprotect'] : ['failover'],
    });
    await this.#jobs.setContext(FAILOVER_JOB, job.id, { vm: vmName, to: rep.peer, plan });
    void this.#run(job.id, vmName, rep.peer, plan, reverse, pointTime).catch((e: unknown) =>
      this.#log.error({ job: job.id, err: e }, 'failover failed outside its steps'),
    );
    return job;
  }

  async #run(
    jobId: string,
    vm: string,
    peer: string,
    plan: string,
    reverse: boolean,
    pointTime: string | undefined,
  ): Promise<void> {
    const runs: { failover?: RunSummary; reprotect?: RunSummary } = {};
    try {
      runs.failover = await this.#jobs.step(jobId, 'failover', () =>
        this.#runAtPeer(jobId, peer, vm, 'planned', runs, pointTime),
      );
      if (reverse)
        runs.reprotect = await this.#jobs.step(jobId, 'reprotect', () =>
          this.#runAtPeer(jobId, peer, vm, 'reprotect', runs),
        );
      const result: VmFailoverResult = {
        vm,
        to: peer,
        plan,
        failover: runs.failover,
        reprotect: runs.reprotect ?? null,
      };
      await this.#jobs.succeed(jobId, result);
    } catch (e) {
      await this.#jobs.fail(jobId, {
        code: (e as { code?: string }).code ?? 'INTERNAL',
        message: (e as Error).message,
      });
    }
  }

  /** Starts the run at the recovery site and follows it (its summary in the job's context) to its end. */
  async #runAtPeer(
    jobId: string,
    peer: string,
    vm: string,
    mode: 'planned' | 'reprotect',
    runs: { failover?: RunSummary; reprotect?: RunSummary },
    pointTime?: string,
  ): Promise<RunSummary> {
    const client = await this.#peers.client(peer, { timeoutMs: 60_000 });
    const started = await client.request<RunSummary>('POST', '/recovery/vm-failover', {
      vm,
      mode,
      ...(pointTime === undefined ? {} : { pointTime }),
    });
    for (;;) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      // A peer that does not answer for a moment is asked again: the run goes on there regardless.
      const s = await client.request<RunSummary>('GET', `/recovery/vm-failover/${started.run}`).catch(() => null);
      if (!s) continue;
      await this.#jobs.setContext(FAILOVER_JOB, jobId, {
        vm,
        to: peer,
        plan: failoverPlanName(vm),
        ...runs,
        [mode === 'planned' ? 'failover' : 'reprotect']: s,
      });
      if (s.state === 'running') continue;
      if (s.state === 'done' && (s.result === 'success' || s.result === 'warnings')) return s;
      const failed = s.vms.find((v) => v.error)?.error;
      throw new MamoriError(
        'RUN_FAILED',
        `the ${mode} run ${s.run} at ${peer} ended ${s.result ?? s.state}${failed ? `: ${failed}` : ''}; see 'mamori plan report ${s.run}' there (a cut run resumes with 'mamori plan resume ${s.run}')`,
        { details: { run: s.run, site: peer } },
      );
    }
  }
}

/**
 * The recovery site's half, called by the protected site with its site token: the one-VM
 * plan applied (checked against both sites like any plan) and run.
 */
export async function startPeerFailover(
  deps: { plans: PlanService; runner: PlanRunner },
  peer: string,
  input: { vm: string; mode: 'planned' | 'reprotect'; pointTime?: string },
): Promise<RunSummary> {
  const name = failoverPlanName(input.vm);
  if (input.mode === 'planned') {
    await deps.plans.apply(
      {
        spec: {
          name,
          description: `made by 'mamori vm failover ${input.vm} --planned' at ${peer}`,
          protectedSite: peer,
          protectedVms: [input.vm],
        },
      },
      { mayRunCommands: false },
    );
  }
  const plan = await deps.plans.get(name);
  if (plan.protectedSite !== peer)
    throw new MamoriError('FORBIDDEN', `plan ${name} protects ${plan.protectedSite}, not ${peer}`);
  return summarizeRun(
    await deps.runner.start(name, input.mode, input.pointTime === undefined ? {} : { pointTime: input.pointTime }),
  );
}

export async function peerFailoverRun(
  deps: { runner: PlanRunner; plans: PlanService },
  peer: string,
  runId: string,
): Promise<RunSummary> {
  const run: PlanRun = await deps.runner.get(runId);
  const plan = await deps.plans.get(run.plan).catch(() => null);
  if (!plan || plan.protectedSite !== peer || !run.plan.startsWith('failover-'))
    throw new MamoriError('RUN_NOT_FOUND', `no failover run ${runId} for ${peer} here`);
  return summarizeRun(run);
}

/**
 * The recovery of a failover cut by a stop of this (the protected) site. This side only asks
 * the recovery site for runs and follows them: it changed nothing here of its own, so there is
 * nothing to roll back. A run cut before the VM started there is that site's plan run, which it
 * resumes (or rolls back) by its own journal. So the job ends with what the recorded runs say:
 * done, going on there, or the reprotect left to start, with the command that starts it.
 */
export function cutFailoverMessage(job: Pick<Job, 'steps'>, c: FailoverJobContext | null): string | undefined {
  if (!c) return undefined;
  // Contexts written before the plan was kept in each of them name it by the VM, as start() does.
  const plan = c.plan ?? failoverPlanName(c.vm);
  const stopped = `the site server stopped during the failover of ${c.vm} to ${c.to}`;
  const reprotect = `mamori plan run ${plan} --mode reprotect`;
  const wantsReprotect = job.steps.some((s) => s.name === 'reprotect');
  const ok = (r: RunSummary): boolean => r.state === 'done' && (r.result === 'success' || r.result === 'warnings');
  const run = c.reprotect ?? c.failover;
  if (!run)
    return `${stopped}, as it asked ${c.to} to start the failover run; see 'mamori plan history ${plan}' at ${c.to}: a run there goes on by itself`;
  if (run.state === 'running')
    return `${stopped}; run ${run.run} goes on at ${c.to}: see 'mamori plan report ${run.run}' there${!c.reprotect && wantsReprotect ? `, and once it has ended, replicate back with '${reprotect}' there` : ''}`;
  if (!ok(run))
    return `${stopped}: run ${run.run} at ${c.to} ended ${run.result ?? run.state}; see 'mamori plan report ${run.run}' there (a cut run resumes with 'mamori plan resume ${run.run}')`;
  if (!c.reprotect && wantsReprotect)
    return `${stopped}, after the failover run ${run.run} had ended: ${c.vm} runs at ${c.to}; the reprotect did not start: run it at ${c.to} with '${reprotect}'`;
  return `${stopped}, which had done its work: ${c.vm} runs at ${c.to} (run ${c.failover?.run ?? run.run})${c.reprotect ? ` and replicates back (run ${c.reprotect.run})` : ''}`;
}

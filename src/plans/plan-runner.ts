import type { StoreHandle } from '../store/store-handle.js';
import { RecoveredVmRepo } from '../store/repos/recovered-vm-repo.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import { faultPoint } from '../core/fault-points.js';
import type { Logger } from '../core/logger.js';
import type { PlanService, ResolvedPlan } from './plan-service.js';
import {
  PLAN_RUN_JOB,
  RUN_MODES,
  type PlanRun,
  type RunJournal,
  type RunMode,
  type RunVmOutcome,
} from './run-journal.js';
import { buildRunSteps, type CleanupTarget, type PlannedStep } from './run-steps.js';
import type { RunStepActions } from './run-step-actions.js';
import type { DryRun } from './dry-run.js';

interface LiveRun {
  run: PlanRun;
  continue: (() => void) | null;
  cancelled: boolean;
  /** The server is stopping: no new step starts and the run is left interrupted, to resume. */
  stopping: boolean;
}

/**
 * Runs recovery plans: builds the journal of steps, runs phases in order (steps of a priority
 * group's VMs in parallel, bounded, after their dependencies), stops at the first error of a
 * planned migration and carries on past per-VM errors otherwise. Every step is journalled
 * before and after it runs; each step's action is idempotent (its recovery rule), so a run
 * cut by a server crash resumes without starting a VM twice or losing one.
 */
export class PlanRunner {
  #recovered: RecoveredVmRepo;
  #plans: PlanService;
  #journal: RunJournal;
  #actions: RunStepActions;
  #log: Logger;
  /** Runs executing in this process, with their continue (prompt) and cancel handles. */
  #live = new Map<string, LiveRun>();

  constructor(deps: {
    db: StoreHandle;
    plans: PlanService;
    journal: RunJournal;
    actions: RunStepActions;
    log: Logger;
  }) {
    this.#recovered = new RecoveredVmRepo(deps.db);
    this.#plans = deps.plans;
    this.#journal = deps.journal;
    this.#actions = deps.actions;
    this.#log = deps.log;
  }

  async dryRun(planName: string, mode: RunMode): Promise<DryRun> {
    assertMode(mode);
    const plan = await this.#plans.resolve(planName, resolveOptions(mode));
    const steps = buildRunSteps(mode, plan, await this.#cleanupTargets(plan, mode));
    const earlier = (await this.#journal.list({ plan: planName, limit: 20 })).filter(
      (r) => r.mode === mode && r.state === 'done' && r.result !== 'errors',
    );
    const rtos = earlier.map((r) => Math.max(...Object.values(r.vms).map((v) => v.rtoSec ?? 0))).filter((x) => x > 0);
    return {
      plan: planName,
      mode,
      inventoryFresh: plan.inventoryFresh,
      steps: steps.map((s) => ({
        label: s.label,
        kind: s.kind,
        ...(s.vm ? { vm: s.vm } : {}),
        ...(s.priority ? { priority: s.priority } : {}),
      })),
      predictedRtoSec: rtos.length > 0 ? round1(rtos.reduce((a, b) => a + b, 0) / rtos.length) : null,
    };
  }

  /** Checks everything, writes the run with its journal, and starts it; returns at once. */
  async start(planName: string, mode: RunMode, options: { pointTime?: string } = {}): Promise<PlanRun> {
    assertMode(mode);
    // A planned run at a point rewinds on purpose (a failover to before a bad change): the VM is
    // shut down and synced as ever, and what it wrote after the point is given up.
    if (options.pointTime !== undefined && mode !== 'test' && mode !== 'disaster' && mode !== 'planned')
      throw new MamoriError(
        'INVALID_INPUT',
        `--point chooses the point of a test, planned or disaster recovery, not of a ${mode} run`,
      );
    if (options.pointTime !== undefined && Number.isNaN(Date.parse(options.pointTime)))
      throw new MamoriError(
        'INVALID_INPUT',
        `--point ${JSON.stringify(options.pointTime)} is not a time (ISO 8601, e.g. 2026-11-27T09:00:00Z)`,
      );
    const plan = await this.#plans.resolve(planName, resolveOptions(mode));
    await this.#assertNoOverlap(plan);
    const steps = buildRunSteps(mode, plan, await this.#cleanupTargets(plan, mode));
    const now = new Date().toISOString();
    const run: PlanRun = {
      id: newShortId('run'),
      plan: planName,
      mode,
      state: 'running',
      peer: plan.peer,
      options,
      snapshot: plan,
      steps,
      vms: Object.fromEntries(
        mode === 'cleanup'
          ? []
          : plan.vms.map((v) => [v.vm.name, { vm: v.vm.name, priority: v.options.priority } satisfies RunVmOutcome]),
      ),
      arrays: {},
      result: null,
      error: null,
      startedAt: now,
      endedAt: null,
      updatedAt: now,
    };
    // Checked again where the run is written, against the runs as they are then: another start
    // may have passed the check above meanwhile.
    await this.#journal.insertUnlessBusy(run, (active) => assertNoOverlap(plan, active));
    this.#launch(run);
    return run;
  }

  /** Continues a run the server died in (state interrupted): steps not done run again, each idempotent. */
  async resume(runId: string): Promise<PlanRun> {
    if (this.#live.has(runId))
      throw new MamoriError('RUN_INVALID_STATE', `run ${runId} is running in this server; nothing to resume`);
    const run = await this.#journal.get(runId);
    if (run.state !== 'interrupted')
      throw new MamoriError(
        'RUN_INVALID_STATE',
        `run ${runId} is ${run.state}; only an interrupted run (its server stopped during it) can be resumed`,
        { details: { state: run.state } },
      );
    if (!(await this.#journal.leaveInterrupted(runId, 'running')))
      throw new MamoriError('RUN_INVALID_STATE', `run ${runId} was resumed or cancelled meanwhile; nothing to resume`);
    run.state = 'running';
    // A step cut by the crash is 'running' in the journal and runs again; so do failed ones.
    for (const s of run.steps) {
      if (s.state === 'failed' || (s.state === 'skipped' && s.message?.startsWith('skipped:'))) {
        s.state = 'pending';
        delete s.message;
      }
    }
    await this.#journal.save(run);
    this.#launch(run);
    return run;
  }

  async continue(runId: string): Promise<PlanRun> {
    const live = this.#live.get(runId);
    if (!live || live.run.state !== 'waiting' || !live.continue) {
      const run = await this.#journal.get(runId);
      throw new MamoriError(
        'RUN_INVALID_STATE',
        `run ${runId} is ${run.state}, not waiting at a prompt${run.state === 'interrupted' ? `; resume it first with 'mamori plan resume ${runId}'` : ''}`,
        { details: { state: run.state } },
      );
    }
    live.continue();
    return live.run;
  }

  /** No new step starts; steps in flight finish; the run ends as cancelled (an interrupted run at once). */
  async cancel(runId: string): Promise<PlanRun> {
    const live = this.#live.get(runId);
    if (live) {
      live.cancelled = true;
      live.continue?.();
      return live.run;
    }
    const run = await this.#journal.get(runId);
    if (run.state !== 'interrupted')
      throw new MamoriError(
        'RUN_INVALID_STATE',
        `run ${runId} is ${run.state}; only a running, waiting or interrupted run can be cancelled`,
      );
    if (!(await this.#journal.leaveInterrupted(runId, 'cancelled')))
      throw new MamoriError(
        'RUN_INVALID_STATE',
        `run ${runId} was resumed or cancelled meanwhile; see 'mamori plan report ${runId}'`,
      );
    run.state = 'cancelled';
    run.result = 'cancelled';
    run.endedAt = new Date().toISOString();
    await this.#journal.save(run);
    return run;
  }

  async get(runId: string): Promise<PlanRun> {
    return this.#live.get(runId)?.run ?? this.#journal.get(runId);
  }

  /** Server stop: runs stop starting steps and are left interrupted (resumable); waits briefly for steps in flight. */
  async shutdown(): Promise<void> {
    for (const l of this.#live.values()) {
      l.stopping = true;
      l.continue?.();
    }
    const deadline = Date.now() + 5_000;
    while (this.#live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  }

  #launch(run: PlanRun): void {
    const live: LiveRun = { run, continue: null, cancelled: false, stopping: false };
    this.#live.set(run.id, live);
    void this.#execute(live)
      .catch(async (e: unknown) => {
        this.#log.error({ run: run.id, err: e }, 'plan run failed outside a step');
        run.error = (e as Error).message;
        run.result = 'errors';
      })
      .finally(async () => {
        if (run.state === 'running' || run.state === 'waiting') {
          run.state = live.cancelled && run.result !== 'errors' ? 'cancelled' : 'done';
          run.result ??= live.cancelled ? 'cancelled' : outcome(run);
          run.endedAt = new Date().toISOString();
        }
        await this.#journal
          .save(run)
          .catch((e: unknown) => this.#log.error({ run: run.id, err: e }, 'could not write the end of a plan run'));
        this.#live.delete(run.id);
        this.#log.info({ run: run.id, plan: run.plan, mode: run.mode, result: run.result }, 'plan run ended');
      });
  }

  async #execute(live: LiveRun): Promise<void> {
    const { run } = live;
    const plan = run.snapshot as ResolvedPlan;
    const steps = run.steps as PlannedStep[];
    const strict = run.mode === 'planned';
    const stop = (): boolean => live.cancelled || live.stopping || (strict && steps.some((s) => s.state === 'failed'));
    const ctx = {
      run,
      plan,
      save: () => this.#journal.save(run),
      waitPrompt: async (message: string): Promise<void> => {
        run.state = 'waiting';
        run.prompt = message;
        await this.#journal.save(run);
        await new Promise<void>((resolve) => {
          live.continue = resolve;
        });
        live.continue = null;
        if (live.stopping) throw new StopRequested();
        delete run.prompt;
        if (run.state === 'waiting') run.state = 'running';
        await this.#journal.save(run);
      },
    };
    const runStep = async (step: PlannedStep): Promise<'ok' | 'failed' | 'stopped'> => {
      if (step.state === 'done' || step.state === 'skipped') return 'ok';
      if (stop()) return 'stopped';
      step.state = 'running';
      step.startedAt = new Date().toISOString();
      delete step.message;
      await this.#journal.save(run);
      try {
        const out = await this.#actions.run(step, ctx);
        // The kill -9 tests' cut: the step's work is done and the run journal does not say so yet.
        faultPoint(`job:${PLAN_RUN_JOB.kind}:${step.kind}`);
        step.state = out.skipped ? 'skipped' : 'done';
        if (out.message) step.message = out.message;
      } catch (e) {
        if (e instanceof StopRequested) {
          // Not a failure: the prompt is shown again when the run is resumed.
          step.state = 'pending';
          delete step.startedAt;
          await this.#journal.save(run);
          return 'stopped';
        }
        step.state = 'failed';
        step.message = (e as Error).message;
        if (step.vm && run.vms[step.vm]) run.vms[step.vm]!.error = step.message;
        this.#log.warn({ run: run.id, step: step.id, err: e }, `plan step failed: ${step.label}`);
      }
      step.endedAt = new Date().toISOString();
      await this.#journal.save(run);
      return step.state === 'failed' ? 'failed' : 'ok';
    };

    const phases = [...new Set(steps.map((s) => s.phase))].sort((a, b) => a - b);
    for (const phase of phases) {
      if (stop()) break;
      const inPhase = steps.filter((s) => s.phase === phase);
      for (const s of inPhase.filter((x) => x.chain === undefined)) if ((await runStep(s)) !== 'ok') break;
      const chains = new Map<string, PlannedStep[]>();
      for (const s of inPhase.filter((x) => x.chain !== undefined))
        chains.set(s.chain!, [...(chains.get(s.chain!) ?? []), s]);
      await runChains(
        chains,
        plan.spec.concurrency,
        (vm) => plan.vms.find((v) => v.vm.name === vm)?.options.dependsOn ?? [],
        async (chain) => {
          for (const s of chain) {
            const r = await runStep(s);
            if (r === 'stopped') break;
            if (r === 'failed') {
              // The rest of this VM's chain depends on the failed step.
              for (const rest of chain.filter((x) => x.state === 'pending')) {
                rest.state = 'skipped';
                rest.message = `skipped: ${s.label} failed`;
              }
              break;
            }
          }
        },
      );
    }
    if (live.stopping) {
      run.state = 'interrupted';
    } else if (live.cancelled) {
      run.result = 'cancelled';
      run.state = 'cancelled';
      run.endedAt = new Date().toISOString();
    }
  }

  async #assertNoOverlap(plan: ResolvedPlan): Promise<void> {
    assertNoOverlap(plan, await this.#journal.active());
  }

  /** Test VMs of this plan's VMs still present: cleanup removes them, and a planned or disaster run first. */
  async #cleanupTargets(plan: ResolvedPlan, mode: RunMode): Promise<CleanupTarget[]> {
    if (mode !== 'cleanup' && mode !== 'planned' && mode !== 'disaster') return [];
    const ids = new Set(plan.vms.map((v) => v.vm.id));
    const rows = await this.#recovered.testVms();
    return rows.filter((r) => ids.has(r.sourceVmId)).map((r) => ({ vmId: r.vmId, vm: r.name }));
  }
}

/** Refuses a run whose VMs a run not ended (`active`) touches too. */
function assertNoOverlap(plan: ResolvedPlan, active: PlanRun[]): void {
  const mine = new Set(plan.vms.map((v) => v.vm.id));
  for (const other of active) {
    const theirs = (other.snapshot as ResolvedPlan).vms.map((v) => v.vm.id);
    if (theirs.some((id) => mine.has(id))) {
      throw new MamoriError(
        'PLAN_BUSY',
        `run ${other.id} (${other.mode} of plan ${other.plan}) is ${other.state} and touches the same VMs; ` +
          `${other.state === 'interrupted' ? `resume it ('mamori plan resume ${other.id}') or cancel it` : 'wait for it to end'} first`,
        { details: { run: other.id, state: other.state } },
      );
    }
  }
}

class StopRequested extends Error {}

/** Runs each chain once its dependencies' chains (same phase) have ended, at most `limit` at once. */
async function runChains(
  chains: Map<string, PlannedStep[]>,
  limit: number,
  deps: (vm: string) => string[],
  body: (chain: PlannedStep[]) => Promise<void>,
): Promise<void> {
  const ended = new Map<string, Promise<void>>();
  let active = 0;
  const queue: (() => void)[] = [];
  const slot = async (): Promise<void> => {
    if (active < limit) {
      active += 1;
      return;
    }
    await new Promise<void>((r) => queue.push(r));
  };
  const release = (): void => {
    const next = queue.shift();
    if (next) next();
    else active -= 1;
  };
  const start = (name: string): Promise<void> => {
    const existing = ended.get(name);
    if (existing) return existing;
    const p = (async () => {
      await Promise.all(
        deps(name)
          .filter((d) => chains.has(d) && d !== name)
          .map((d) => start(d)),
      );
      await slot();
      try {
        await body(chains.get(name)!);
      } finally {
        release();
      }
    })();
    ended.set(name, p);
    return p;
  };
  await Promise.all([...chains.keys()].map((n) => start(n)));
}

function outcome(run: PlanRun): PlanRun['result'] {
  if (run.steps.some((s) => s.state === 'failed')) return 'errors';
  if (run.steps.some((s) => s.state === 'skipped' || (s.message ?? '').startsWith('warning'))) return 'warnings';
  return 'success';
}

/**
 * disaster and cleanup may run on the protected site's inventory as last seen (it may be
 * gone); reprotect and failback run on it as the plan was applied, because the roles have
 * turned: the VMs it lists run here now.
 */
function resolveOptions(mode: RunMode): { allowStale: boolean; stored: boolean } {
  return { allowStale: mode === 'disaster' || mode === 'cleanup', stored: mode === 'reprotect' || mode === 'failback' };
}

function assertMode(mode: string): asserts mode is RunMode {
  if (!(RUN_MODES as readonly string[]).includes(mode))
    throw new MamoriError(
      'INVALID_INPUT',
      `--mode must be one of ${RUN_MODES.join(', ')} (got ${JSON.stringify(mode)})`,
    );
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

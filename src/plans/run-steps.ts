import type { ResolvedPlan } from './plan-service.js';
import type { PlanStep } from './plan-spec.js';
import type { RunMode, RunStep } from './run-journal.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * A step with where it runs: steps of one phase run together, phases one after the other.
 * Within a phase, steps with a chain (a VM's name) run in that VM's chain, in order; chains
 * run in parallel (bounded, dependencies respected); steps without a chain run one by one.
 */
export interface PlannedStep extends RunStep {
  phase: number;
  chain?: string;
}

export const PHASE = {
  cleanup: 0,
  /** Array-based groups' test copies go after their test VMs. */
  cleanupArrays: 1,
  /** Shutdown of protected VMs, last priority first: 10 + (5 - priority). */
  shutdown: 10,
  /** Array-based groups: the protected array's last point, once every VM on it is off. */
  arrayPrepare: 15,
  promote: 20,
  /** Recovery of priority p: 30 + 3p (before), +1 (VMs), +2 (after). */
  recover: 30,
  /** Replication the other way (reprotect, and the end of a failback). */
  reprotect: 60,
} as const;

export interface CleanupTarget {
  vmId: string;
  vm: string;
}

function byPriorityOrder(plan: ResolvedPlan): ResolvedPlan['vms'] {
  return [...plan.vms].sort((a, b) => a.options.priority - b.options.priority || a.vm.name.localeCompare(b.vm.name));
}

/** The journal of a run, in the order it will run, from the resolved plan. */
export function buildRunSteps(mode: RunMode, plan: ResolvedPlan, cleanup: CleanupTarget[]): PlannedStep[] {
  const steps: PlannedStep[] = [];
  let n = 0;
  const add = (s: Omit<PlannedStep, 'id' | 'state'>): void =>
    void steps.push({ id: `s${String(++n).padStart(3, '0')}`, state: 'pending', ...s });
  const arrays = plan.arrayGroups ?? [];
  const onArray = (v: ResolvedPlan['vms'][number]): boolean => v.vm.arrayDisks !== undefined;
  const devices = (g: (typeof arrays)[number]): string => `${g.deviceIds.join(', ')} of array ${g.arrayId}`;
  if (mode === 'failback' && arrays.length > 0) {
    throw new MamoriError(
      'INVALID_INPUT',
      `failback of array-based groups (${arrays.map((g) => g.name).join(', ')}) is a planned migration the other way: after reprotect the group is protected at ${plan.peer}'s side, so run a plan for it there with --mode planned, then --mode reprotect`,
    );
  }
  for (const t of cleanup)
    add({
      kind: 'cleanup-vm',
      label: `remove test VM ${t.vm}`,
      vm: t.vm,
      vmId: t.vmId,
      phase: PHASE.cleanup,
      chain: t.vm,
    });
  if (mode === 'cleanup' || mode === 'planned' || mode === 'disaster') {
    for (const g of arrays)
      add({
        kind: 'array-test-stop',
        label: `remove the test copies of ${devices(g)} (group ${g.name})`,
        group: g.name,
        phase: PHASE.cleanupArrays,
      });
  }
  if (mode === 'cleanup') return steps;
  if (mode === 'test') {
    for (const g of arrays)
      add({
        kind: 'array-test-start',
        label: `test copies of ${devices(g)} from their newest point (group ${g.name}); replication goes on`,
        group: g.name,
        phase: PHASE.promote,
      });
  }

  const byPriority = new Map<number, ResolvedPlan['vms']>();
  for (const v of plan.vms) byPriority.set(v.options.priority, [...(byPriority.get(v.options.priority) ?? []), v]);
  const priorities = [...byPriority.keys()].sort((a, b) => a - b);

  if (mode === 'planned' || mode === 'disaster') {
    for (const p of [...priorities].reverse()) {
      for (const v of byPriority.get(p)!) {
        add({
          kind: 'shutdown',
          label: `shut down ${v.vm.name} at ${plan.peer} and sync it`,
          vm: v.vm.name,
          priority: p,
          phase: PHASE.shutdown + (5 - p),
          chain: v.vm.name,
        });
      }
    }
    for (const g of arrays) {
      add({
        kind: 'array-prepare-failover',
        label: `${plan.peer} makes ${g.sourceDeviceIds.join(', ')} of array ${g.sourceArrayId} read-only and sends a last point (group ${g.name})`,
        group: g.name,
        phase: PHASE.arrayPrepare,
      });
      add({
        kind: 'array-failover',
        label: `fail over ${devices(g)} (group ${g.name})`,
        group: g.name,
        phase: PHASE.promote,
      });
    }
    for (const v of plan.vms.filter((x) => !onArray(x)))
      add({
        kind: 'promote',
        label: `promote the replica of ${v.vm.name}`,
        vm: v.vm.name,
        priority: v.options.priority,
        phase: PHASE.promote,
        chain: v.vm.name,
      });
  }

  if (mode === 'reprotect') {
    for (const g of arrays) {
      add({
        kind: 'array-prepare-reverse',
        label: `${plan.peer} turns ${g.sourceDeviceIds.join(', ')} of array ${g.sourceArrayId} into targets at the newest common point (group ${g.name})`,
        group: g.name,
        phase: PHASE.reprotect,
      });
      add({
        kind: 'array-reverse',
        label: `replicate ${devices(g)} to ${plan.peer}, sending only what changed since the common point, and protect group ${g.name} here`,
        group: g.name,
        phase: PHASE.reprotect,
      });
    }
    for (const v of byPriorityOrder(plan).filter((x) => !onArray(x))) {
      add({
        kind: 'seed-peer',
        label: `${plan.peer} keeps ${v.vm.name}'s old disks as the seed of a replica`,
        vm: v.vm.name,
        priority: v.options.priority,
        phase: PHASE.reprotect,
        chain: v.vm.name,
      });
      add({
        kind: 'replicate',
        label: `replicate ${v.vm.name} to ${plan.peer}, sending only what differs`,
        vm: v.vm.name,
        priority: v.options.priority,
        phase: PHASE.reprotect,
        chain: v.vm.name,
      });
    }
    return steps;
  }
  if (mode === 'failback') {
    for (const p of [...priorities].reverse()) {
      for (const v of byPriority.get(p)!) {
        add({
          kind: 'shutdown-local',
          label: `shut down ${v.vm.name} here and sync it to ${plan.peer}`,
          vm: v.vm.name,
          priority: p,
          phase: PHASE.shutdown + (5 - p),
          chain: v.vm.name,
        });
      }
    }
    for (const v of plan.vms)
      add({
        kind: 'promote-peer',
        label: `${plan.peer} promotes its replica of ${v.vm.name}`,
        vm: v.vm.name,
        priority: v.options.priority,
        phase: PHASE.promote,
        chain: v.vm.name,
      });
    for (const p of priorities) {
      for (const v of byPriority.get(p)!) {
        add({
          kind: 'recover-peer',
          label: `recover ${v.vm.name} at ${plan.peer}${v.options.powerOn ? ' and wait for its heartbeat' : ''}`,
          vm: v.vm.name,
          priority: p,
          phase: PHASE.recover + 3 * p + 1,
          chain: v.vm.name,
        });
      }
    }
    for (const v of byPriorityOrder(plan)) {
      add({
        kind: 'seed-local',
        label: `keep ${v.vm.name}'s disks here as the seed of a replica`,
        vm: v.vm.name,
        priority: v.options.priority,
        phase: PHASE.reprotect,
        chain: v.vm.name,
      });
      add({
        kind: 'replicate-peer',
        label: `${plan.peer} replicates ${v.vm.name} back here, sending only what differs`,
        vm: v.vm.name,
        priority: v.options.priority,
        phase: PHASE.reprotect,
        chain: v.vm.name,
      });
    }
    return steps;
  }

  const userSteps = plan.spec.steps
    .map((s, i) => ({ s, i }))
    .filter(({ s }) => s.modes.includes(mode as PlanStep['modes'][number]));
  const userStep = (x: { s: PlanStep; i: number }, phase: number, chain?: string): void => {
    const what = x.s.action.kind === 'command' ? `run ${x.s.action.argv.join(' ')}` : `prompt: ${x.s.action.message}`;
    const scope = x.s.scope.kind === 'priority' ? `priority ${x.s.scope.priority}` : x.s.scope.vm;
    add({
      kind: x.s.action.kind,
      label: `${x.s.at} ${scope}: ${what}`,
      planStep: x.i,
      phase,
      ...(chain ? { chain, vm: chain } : {}),
    });
  };
  for (const p of priorities) {
    const base = PHASE.recover + 3 * p;
    for (const x of userSteps.filter(
      ({ s }) => s.at === 'before' && s.scope.kind === 'priority' && s.scope.priority === p,
    ))
      userStep(x, base);
    for (const v of byPriority.get(p)!) {
      const name = v.vm.name;
      const vmSteps = (at: 'before' | 'after') =>
        userSteps.filter(({ s }) => s.at === at && s.scope.kind === 'vm' && s.scope.vm === name);
      for (const x of vmSteps('before')) userStep(x, base + 1, name);
      add({
        kind: 'recover',
        label: `recover ${name}${mode === 'test' ? ' into the test network' : ''}`,
        vm: name,
        priority: p,
        phase: base + 1,
        chain: name,
      });
      add({
        kind: 'power-on',
        label: v.options.powerOn ? `power on ${name} and wait for its heartbeat` : `leave ${name} powered off`,
        vm: name,
        priority: p,
        phase: base + 1,
        chain: name,
      });
      for (const x of vmSteps('after')) userStep(x, base + 1, name);
    }
    for (const x of userSteps.filter(
      ({ s }) => s.at === 'after' && s.scope.kind === 'priority' && s.scope.priority === p,
    ))
      userStep(x, base + 2);
  }
  return steps;
}

import { PLAN_LIMITS } from './plan-limits.js';
import { short } from './plan-problems.js';

/** What checkDependencies needs of a VM's options. */
export interface DependencyOptions {
  priority: number;
  dependsOn: string[];
}

/** VM names shown of a long cycle or chain, the rest counted. */
const NAMES_SHOWN = 6;

/**
 * Dependencies: on VMs the plan lists, never on a later priority (it would never have
 * started), never on itself, without cycles among VMs of one priority, and in chains of at
 * most PLAN_LIMITS.dependencyChain VMs (each waits for the one before: a long chain is a slow
 * recovery, and the runner waits along it). Kahn's algorithm with explicit queues: O(VMs +
 * dependencies) time, no recursion whatever the plan. `vms` must not inherit names
 * (`vms['toString']` must be undefined): the caller builds it without a prototype.
 */
export function checkDependencies(
  vms: Record<string, DependencyOptions>,
  bad: (path: string, message: string) => void,
): void {
  const names = Object.keys(vms);
  const index = new Map(names.map((n, i) => [n, i]));
  /** Same-priority edges: waitsFor[i] lists the VMs i waits for, waitedBy the reverse. */
  const waitsFor: number[][] = names.map(() => []);
  const waitedBy: number[][] = names.map(() => []);
  names.forEach((vm, i) => {
    const o = vms[vm]!;
    for (const d of new Set(o.dependsOn)) {
      const j = index.get(d);
      const at = `vms.${short(vm)}.dependsOn`;
      if (d === vm) bad(at, `${short(vm)} depends on itself`);
      else if (j === undefined) bad(at, `${short(vm)} depends on ${short(d)}, which the plan does not list under vms`);
      else if (vms[d]!.priority > o.priority) {
        bad(
          at,
          `${short(vm)} (priority ${o.priority}) depends on ${short(d)} of the later priority ${vms[d]!.priority}: ${short(d)} would not have started yet`,
        );
      } else if (vms[d]!.priority === o.priority) {
        waitsFor[i]!.push(j);
        waitedBy[j]!.push(i);
      }
    }
  });

  // Kahn: take VMs whose dependencies are all taken; chain[i] is the longest chain ending at i.
  const waiting = waitsFor.map((w) => w.length);
  const chain = names.map(() => 1);
  const before = names.map(() => -1);
  const ready = names.flatMap((_, i) => (waiting[i] === 0 ? [i] : []));
  let longest = -1;
  for (let head = 0; head < ready.length; head++) {
    const d = ready[head]!;
    if (longest < 0 || chain[d]! > chain[longest]!) longest = d;
    for (const i of waitedBy[d]!) {
      if (chain[d]! + 1 > chain[i]!) {
        chain[i] = chain[d]! + 1;
        before[i] = d;
      }
      waiting[i]! -= 1;
      if (waiting[i] === 0) ready.push(i);
    }
  }
  if (longest >= 0 && chain[longest]! > PLAN_LIMITS.dependencyChain) {
    const path: number[] = [];
    for (let i = longest; i >= 0; i = before[i]!) path.push(i);
    bad(
      `vms.${short(names[longest]!)}.dependsOn`,
      `a dependency chain may be at most ${PLAN_LIMITS.dependencyChain} VMs long: ${shown(path.map((i) => names[i]!))}`,
    );
  }

  // VMs never taken wait, directly or not, on a cycle; each waits for at least one other such
  // VM, so following those from any of them comes back to a VM seen on the way: one cycle.
  const walk = names.map(() => -1);
  for (let start = 0; start < names.length; start++) {
    if (waiting[start] === 0 || walk[start]! >= 0) continue;
    const trail: number[] = [];
    let at = start;
    while (walk[at]! < 0) {
      walk[at] = start;
      trail.push(at);
      at = waitsFor[at]!.find((j) => waiting[j]! > 0)!;
    }
    if (walk[at] !== start) continue; // reached a cycle an earlier walk reported
    const cycle = trail.slice(trail.indexOf(at)).map((i) => names[i]!);
    bad(`vms.${short(cycle[0]!)}.dependsOn`, `dependency cycle: ${shown([...cycle, cycle[0]!])}`);
  }
}

/** `a -> b -> c`, or of a long one its first names, the last and how many VMs (a cycle's first is also its last). */
function shown(vms: string[]): string {
  if (vms.length <= NAMES_SHOWN + 1) return vms.map((v) => short(v)).join(' -> ');
  const distinct = vms[0] === vms.at(-1) ? vms.length - 1 : vms.length;
  return `${vms
    .slice(0, NAMES_SHOWN)
    .map((v) => short(v))
    .join(' -> ')} -> … -> ${short(vms.at(-1)!)} (${distinct} VMs)`;
}

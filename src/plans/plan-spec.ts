import type { MamoriError } from '../core/mamori-error.js';
import { inNetwork, parseIpv4, parseIpv4Interface } from './ipv4-cidr.js';
import { PLAN_LIMITS } from './plan-limits.js';
import { PlanProblems, pathOf, planTooLarge, quote, short } from './plan-problems.js';
import { checkPlanShape } from './plan-shape.js';
import { readPlanYaml } from './plan-yaml.js';
import { checkDependencies } from './plan-dependencies.js';

export type { PlanProblem } from './plan-problems.js';

/**
 * A recovery plan as declared (YAML or the API's JSON): structure only. Whether its VMs,
 * groups and mappings exist is checked against the sites by the plan service; this module
 * checks everything that needs no site, and names the YAML line of each problem.
 *
 * Any text or data ends in a PlanSpec or a MamoriError, in time bounded by PLAN_LIMITS:
 * INVALID_INPUT listing the problems (at most 50, each once, quoting at most 64 characters
 * of a value), or PLAN_TOO_LARGE naming the limit a plan is over.
 */
import {
  STEP_MODES,
  type IpCustomization,
  type PlanSpec,
  type PlanStep,
  type PlanVmOptions,
  type StepMode,
} from '../store/records/plan-record.js';
// The plan's record types live in store/ (issue 20: plans.spec has one codec there); re-exported here.
export { STEP_MODES } from '../store/records/plan-record.js';
export type { IpCustomization, PlanVmOptions, StepMode, PlanStep, PlanSpec } from '../store/records/plan-record.js';

export const PLAN_DEFAULTS = {
  priority: 3,
  powerOn: true,
  waitHeartbeatSec: 300,
  shutdownTimeoutSec: 300,
  concurrency: 4,
} as const;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const TOP_KEYS = [
  'name',
  'description',
  'protectedSite',
  'protectionGroups',
  'protectedVms',
  'shutdownTimeout',
  'concurrency',
  'vms',
  'steps',
];
const STEP_KEYS = ['before', 'after', 'command', 'prompt', 'timeout', 'modes'];
const VM_KEYS = ['priority', 'powerOn', 'waitHeartbeat', 'dependsOn', 'recoveryIp', 'testIp'];
const IP_KEYS = ['address', 'gateway', 'dns'];

/**
 * Parses and checks a plan written in YAML; every problem is reported at once, each with its
 * line. The public entry point for plan text (the API, the CLI, fuzzing): a PlanSpec or a
 * MamoriError, never another exception.
 */
export function parsePlanYaml(text: string, source = 'plan'): PlanSpec {
  const lineAt = new Map<string, number>();
  const problems = new PlanProblems((path) => lineAt.get(path) ?? null);
  const value = readPlanYaml(text, source, problems, lineAt);
  if (problems.count > 0) throw problems.error(source);
  return checkWith(value, source, problems);
}

/** Checks a plan given as plain data (the API's JSON body). */
export function checkPlan(
  input: unknown,
  source = 'plan',
  lineOf: (path: string) => number | null = () => null,
): PlanSpec {
  return checkWith(input, source, new PlanProblems(lineOf));
}

function checkWith(input: unknown, source: string, problems: PlanProblems): PlanSpec {
  const bad = (path: string, message: string): void => problems.add(path, message);
  if (!isRecord(input)) {
    bad('', 'a plan is a mapping with name, protectionGroups and vms');
    throw problems.error(source);
  }
  checkCounts(input, source);
  // Data before meaning: what follows reads only bounded text from plain, prototype-free keys.
  checkPlanShape(input, source, problems);
  if (problems.count > 0) throw problems.error(source);
  unknownKeys(input, '', TOP_KEYS, bad);

  const name = input['name'];
  if (typeof name !== 'string' || !NAME_RE.test(name))
    bad('name', 'name is required: 1-63 letters, digits, ".", "_" or "-"');
  const description = input['description'] ?? '';
  if (typeof description !== 'string') bad('description', 'description must be text');
  const groups = input['protectionGroups'] ?? [];
  if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string' && NAME_RE.test(g))) {
    bad('protectionGroups', 'protectionGroups is a list of protection group names');
  } else if (new Set(groups).size !== groups.length) bad('protectionGroups', 'a protection group is listed twice');
  const singles = input['protectedVms'] ?? [];
  if (!Array.isArray(singles) || !singles.every((g) => typeof g === 'string' && NAME_RE.test(g))) {
    bad('protectedVms', 'protectedVms is a list of VM names');
  } else if (new Set(singles).size !== singles.length) bad('protectedVms', 'a VM is listed twice');
  if (Array.isArray(groups) && Array.isArray(singles) && groups.length + singles.length === 0) {
    bad(
      'protectionGroups',
      'a plan recovers one or more protection groups (protectionGroups) or protected VMs (protectedVms)',
    );
  }
  const shutdownTimeoutSec = duration(
    input['shutdownTimeout'],
    'shutdownTimeout',
    PLAN_DEFAULTS.shutdownTimeoutSec,
    1,
    24 * 3600,
    bad,
  );
  const concurrency = integer(input['concurrency'], 'concurrency', PLAN_DEFAULTS.concurrency, 1, 64, bad);

  // No prototype: a name the plan does not list (toString, constructor) must not be found here.
  const vms: Record<string, PlanVmOptions> = Object.create(null) as Record<string, PlanVmOptions>;
  const rawVms = input['vms'] ?? {};
  if (!isRecord(rawVms)) bad('vms', 'vms is a mapping from VM name to its options');
  else {
    for (const [vm, raw] of Object.entries(rawVms)) {
      const p = pathOf('vms', vm);
      if (!NAME_RE.test(vm)) bad(p, `${quote(vm)} is not a VM name: 1-63 letters, digits, ".", "_" or "-"`);
      const o = raw ?? {};
      if (!isRecord(o)) {
        bad(
          p,
          `the options of ${short(vm)} are a mapping (priority, powerOn, waitHeartbeat, dependsOn, recoveryIp, testIp)`,
        );
        continue;
      }
      unknownKeys(o, p, VM_KEYS, bad);
      const dependsOn = o['dependsOn'] ?? [];
      if (!Array.isArray(dependsOn) || !dependsOn.every((d) => typeof d === 'string'))
        bad(`${p}.dependsOn`, 'dependsOn is a list of VM names');
      const powerOn = o['powerOn'] ?? PLAN_DEFAULTS.powerOn;
      if (typeof powerOn !== 'boolean') bad(`${p}.powerOn`, 'powerOn is true or false');
      const recoveryIp = ip(o['recoveryIp'], `${p}.recoveryIp`, bad);
      const testIp = ip(o['testIp'], `${p}.testIp`, bad);
      vms[vm] = {
        priority: integer(o['priority'], `${p}.priority`, PLAN_DEFAULTS.priority, 1, 5, bad),
        powerOn: powerOn === true,
        waitHeartbeatSec: duration(
          o['waitHeartbeat'],
          `${p}.waitHeartbeat`,
          PLAN_DEFAULTS.waitHeartbeatSec,
          0,
          24 * 3600,
          bad,
        ),
        dependsOn: Array.isArray(dependsOn) ? dependsOn.filter((d): d is string => typeof d === 'string') : [],
        ...(recoveryIp ? { recoveryIp } : {}),
        ...(testIp ? { testIp } : {}),
      };
    }
    checkDependencies(vms, bad);
  }
  const protectedSite = input['protectedSite'] ?? null;
  if (protectedSite !== null && (typeof protectedSite !== 'string' || !NAME_RE.test(protectedSite)))
    bad('protectedSite', 'protectedSite is the name of a paired site');
  const steps = planSteps(input['steps'], vms, bad);
  if (problems.count > 0) throw problems.error(source);
  return {
    name: name as string,
    description: description as string,
    protectedSite: protectedSite as string | null,
    protectionGroups: groups as string[],
    protectedVms: singles as string[],
    shutdownTimeoutSec,
    concurrency,
    vms,
    steps,
  };
}

/**
 * The counted limits (PLAN_LIMITS), checked before anything is read one by one: a plan over
 * one is refused whole, with the limit in the message.
 */
function checkCounts(input: Record<string, unknown>, source: string): void {
  const over = (what: string, limit: keyof typeof PLAN_LIMITS, actual: number): MamoriError =>
    planTooLarge(source, `${what} (this one has ${actual}); split it into smaller plans`, {
      limit,
      max: PLAN_LIMITS[limit],
      actual,
    });
  const lengthOf = (v: unknown): number => (Array.isArray(v) ? v.length : 0);
  const vms = input['vms'];
  const names = isRecord(vms) ? Object.keys(vms) : [];
  if (names.length > PLAN_LIMITS.vms)
    throw over(`a plan may name at most ${PLAN_LIMITS.vms} VMs under vms`, 'vms', names.length);
  const groups = lengthOf(input['protectionGroups']);
  if (groups > PLAN_LIMITS.protectionGroups)
    throw over(
      `a plan may recover at most ${PLAN_LIMITS.protectionGroups} protection groups`,
      'protectionGroups',
      groups,
    );
  const singles = lengthOf(input['protectedVms']);
  if (singles > PLAN_LIMITS.protectedVms)
    throw over(`a plan may list at most ${PLAN_LIMITS.protectedVms} protectedVms`, 'protectedVms', singles);
  const steps = lengthOf(input['steps']);
  if (steps > PLAN_LIMITS.steps) throw over(`a plan may have at most ${PLAN_LIMITS.steps} steps`, 'steps', steps);
  let dependencies = 0;
  for (const vm of names) {
    const o = (vms as Record<string, unknown>)[vm];
    const n = isRecord(o) ? lengthOf(o['dependsOn']) : 0;
    if (n > PLAN_LIMITS.dependsOnPerVm)
      throw over(
        `a VM may depend on at most ${PLAN_LIMITS.dependsOnPerVm} others; ${short(vm)} names more`,
        'dependsOnPerVm',
        n,
      );
    dependencies += n;
  }
  if (dependencies > PLAN_LIMITS.dependencies)
    throw over(
      `a plan may name at most ${PLAN_LIMITS.dependencies} dependencies (dependsOn entries) in all`,
      'dependencies',
      dependencies,
    );
}

/**
 * steps: [{ before: "priority 2" | after: "vm db1", command: [argv...] | prompt: "text", timeout: 60s, modes: [test] }]
 * A command runs on the recovery site's server as an argument array (no shell); a prompt
 * pauses the run until `mamori plan continue RUN`.
 */
function planSteps(
  raw: unknown,
  vms: Record<string, PlanVmOptions>,
  bad: (path: string, message: string) => void,
): PlanStep[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    bad('steps', 'steps is a list of {before|after, command|prompt} entries');
    return [];
  }
  const out: PlanStep[] = [];
  raw.forEach((st: unknown, i) => {
    const p = `steps.${i}`;
    if (!isRecord(st)) return bad(p, 'a step is a mapping with before or after, and command or prompt');
    unknownKeys(st, p, STEP_KEYS, bad);
    const where = st['before'] ?? st['after'];
    if ((st['before'] === undefined) === (st['after'] === undefined))
      return bad(p, 'a step has exactly one of before or after');
    const at = st['before'] !== undefined ? 'before' : 'after';
    const m = typeof where === 'string' ? /^(priority)\s+([1-5])$|^(vm)\s+(\S+)$/.exec(where.trim()) : null;
    if (!m) return bad(`${p}.${at}`, `${at} is "priority N" (1-5) or "vm NAME"`);
    const scope: PlanStep['scope'] = m[1] ? { kind: 'priority', priority: Number(m[2]) } : { kind: 'vm', vm: m[4]! };
    if (scope.kind === 'vm' && vms[scope.vm] === undefined)
      return bad(`${p}.${at}`, `step ${at} vm ${short(scope.vm)}: the plan does not list ${short(scope.vm)} under vms`);
    const modes = st['modes'] ?? [...STEP_MODES];
    if (
      !Array.isArray(modes) ||
      modes.length === 0 ||
      !modes.every((x) => (STEP_MODES as readonly unknown[]).includes(x))
    )
      return bad(`${p}.modes`, `modes is a list of ${STEP_MODES.join(', ')}`);
    if ((st['command'] === undefined) === (st['prompt'] === undefined))
      return bad(p, 'a step has exactly one of command or prompt');
    let action: PlanStep['action'];
    if (st['command'] !== undefined) {
      const argv = st['command'];
      if (
        !Array.isArray(argv) ||
        argv.length === 0 ||
        argv.length > PLAN_LIMITS.commandArgs ||
        !argv.every((a) => typeof a === 'string' && a.length > 0) ||
        !String(argv[0]).startsWith('/')
      ) {
        return bad(
          `${p}.command`,
          `command is a list: an absolute program path and at most ${PLAN_LIMITS.commandArgs - 1} arguments (no shell), e.g. ["/usr/bin/logger", "db up"]`,
        );
      }
      action = {
        kind: 'command',
        argv: argv as string[],
        timeoutSec: duration(st['timeout'], `${p}.timeout`, 300, 1, 24 * 3600, bad),
      };
    } else {
      if (typeof st['prompt'] !== 'string' || st['prompt'].trim() === '')
        return bad(`${p}.prompt`, 'prompt is the text shown while the run waits');
      if (st['timeout'] !== undefined)
        return bad(`${p}.timeout`, 'a prompt waits for `mamori plan continue RUN`; it has no timeout');
      action = { kind: 'prompt', message: st['prompt'] };
    }
    out.push({ at, scope, action, modes: modes as StepMode[] });
  });
  return out;
}

function ip(raw: unknown, path: string, bad: (path: string, message: string) => void): IpCustomization | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isRecord(raw)) {
    bad(path, 'an IP customization is a mapping with address (CIDR), and optionally gateway and dns');
    return undefined;
  }
  unknownKeys(raw, path, IP_KEYS, bad);
  const address = raw['address'];
  // An IPv4 interface is at most 18 characters; a longer text would only be echoed back.
  if (typeof address !== 'string' || address.length > 32) {
    bad(`${path}.address`, 'address is required, as an IPv4 address with its prefix length, e.g. 10.1.0.5/24');
    return undefined;
  }
  const net = parseIpv4Interface(address);
  if (typeof net === 'string') {
    bad(`${path}.address`, net);
    return undefined;
  }
  const out: IpCustomization = { address };
  const gateway = raw['gateway'];
  if (gateway !== undefined) {
    const g = typeof gateway === 'string' ? parseIpv4(gateway) : null;
    if (g === null) bad(`${path}.gateway`, `${quote(gateway)} is not an IPv4 address`);
    else if (!inNetwork(g, net))
      bad(`${path}.gateway`, `gateway ${String(gateway)} is outside the network of ${address}`);
    else if (g === parseIpv4(net.address)) bad(`${path}.gateway`, `gateway ${String(gateway)} is the VM's own address`);
    else out.gateway = gateway as string;
  }
  const dns = raw['dns'];
  if (dns !== undefined) {
    if (
      !Array.isArray(dns) ||
      dns.length > PLAN_LIMITS.dnsServers ||
      !dns.every((d) => typeof d === 'string' && parseIpv4(d) !== null)
    ) {
      bad(`${path}.dns`, `dns is a list of at most ${PLAN_LIMITS.dnsServers} IPv4 addresses`);
    } else out.dns = dns as string[];
  }
  return out;
}

function integer(
  raw: unknown,
  path: string,
  dflt: number,
  min: number,
  max: number,
  bad: (path: string, message: string) => void,
): number {
  if (raw === undefined) return dflt;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < min || raw > max) {
    bad(path, `${path.split('.').at(-1)} must be a whole number from ${min} to ${max} (got ${quote(raw)})`);
    return dflt;
  }
  return raw;
}

/** `90`, `90s`, `5m`, `1h` -> seconds. */
function duration(
  raw: unknown,
  path: string,
  dflt: number,
  min: number,
  max: number,
  bad: (path: string, message: string) => void,
): number {
  if (raw === undefined) return dflt;
  const m =
    typeof raw === 'number'
      ? [String(raw), String(raw), 's']
      : typeof raw === 'string'
        ? /^(\d+)\s*(s|m|h)?$/.exec(raw.trim())
        : null;
  const secs = m ? Number(m[1]) * { s: 1, m: 60, h: 3600 }[(m[2] ?? 's') as 's' | 'm' | 'h'] : NaN;
  if (!Number.isInteger(secs) || secs < min || secs > max) {
    bad(
      path,
      `${path.split('.').at(-1)} must be a duration such as 90s, 5m or 1h, from ${min} s to ${max / 3600} h (got ${quote(raw)})`,
    );
    return dflt;
  }
  return secs;
}

function unknownKeys(
  o: Record<string, unknown>,
  path: string,
  known: readonly string[],
  bad: (path: string, message: string) => void,
): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k))
      bad(pathOf(path, k), `unknown key ${quote(k)}${path ? ` in ${path}` : ''} (known: ${known.join(', ')})`);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

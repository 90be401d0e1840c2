import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { MamoriError } from '../core/mamori-error.js';
import { inNetwork, parseIpv4, parseIpv4Interface } from './ipv4-cidr.js';

/**
 * A recovery plan as declared (YAML or the API's JSON): structure only. Whether its VMs,
 * groups and mappings exist is checked against the sites by the plan service; this module
 * checks everything that needs no site, and names the YAML line of each problem.
 */
export interface IpCustomization {
  /** `10.1.0.5/24` */
  address: string;
  gateway?: string;
  dns?: string[];
}

export interface PlanVmOptions {
  /** 1 (first) to 5 (last); default 3. */
  priority: number;
  powerOn: boolean;
  /** Wait this long for the guest's heartbeat after power-on; 0: do not wait. */
  waitHeartbeatSec: number;
  /** VMs of the same (or an earlier) priority that must have recovered first. */
  dependsOn: string[];
  recoveryIp?: IpCustomization;
  testIp?: IpCustomization;
}

export const STEP_MODES = ['test', 'planned', 'disaster'] as const;
export type StepMode = (typeof STEP_MODES)[number];

/** A step the operator adds before or after a priority group or a VM's recovery. */
export interface PlanStep {
  at: 'before' | 'after';
  scope: { kind: 'priority'; priority: number } | { kind: 'vm'; vm: string };
  action: { kind: 'command'; argv: string[]; timeoutSec: number } | { kind: 'prompt'; message: string };
  /** Run modes the step runs in (default: all). */
  modes: StepMode[];
}

export interface PlanSpec {
  name: string;
  description: string;
  /** The paired site whose protection groups this plan recovers here (default: the only peer). */
  protectedSite: string | null;
  protectionGroups: string[];
  /**
   * Protected VMs recovered one by one, by name, in or outside a protection group (what
   * `mamori vm failover VM --planned` makes: Hyper-V's per-VM failover). A plan names at
   * least one group or one VM.
   */
  protectedVms: string[];
  /** Guest shutdown of protected VMs before a planned migration, then forced off. */
  shutdownTimeoutSec: number;
  /** VMs of one priority started at once, at most. */
  concurrency: number;
  /** Per-VM options; VMs of the groups that are not listed get the defaults. */
  vms: Record<string, PlanVmOptions>;
  steps: PlanStep[];
}

export const PLAN_DEFAULTS = { priority: 3, powerOn: true, waitHeartbeatSec: 300, shutdownTimeoutSec: 300, concurrency: 4 } as const;

export interface PlanProblem {
  /** Where in the document, e.g. `vms.db1.priority`. */
  path: string;
  /** 1-based line in the YAML, when it came from YAML. */
  line: number | null;
  message: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const TOP_KEYS = ['name', 'description', 'protectedSite', 'protectionGroups', 'protectedVms', 'shutdownTimeout', 'concurrency', 'vms', 'steps'];
const STEP_KEYS = ['before', 'after', 'command', 'prompt', 'timeout', 'modes'];
const VM_KEYS = ['priority', 'powerOn', 'waitHeartbeat', 'dependsOn', 'recoveryIp', 'testIp'];
const IP_KEYS = ['address', 'gateway', 'dns'];

/** Parses and checks a plan written in YAML; every problem is reported at once, each with its line. */
export function parsePlanYaml(text: string, source = 'plan'): PlanSpec {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({ path: '', line: e.linePos?.[0]?.line ?? lines.linePos(e.pos[0]).line, message: e.message.split('\n')[0]! }));
    throw planInvalid(source, problems);
  }
  const lineAt = new Map<string, number>();
  const value = toPlain(doc.contents, '', lineAt, lines);
  return checkPlan(value, source, (path) => lineAt.get(path) ?? null);
}

/** Checks a plan given as plain data (the API's JSON body). */
export function checkPlan(input: unknown, source = 'plan', lineOf: (path: string) => number | null = () => null): PlanSpec {
  const problems: PlanProblem[] = [];
  const bad = (path: string, message: string): void => void problems.push({ path, line: lineOf(path), message });
  if (!isRecord(input)) throw planInvalid(source, [{ path: '', line: null, message: 'a plan is a mapping with name, protectionGroups and vms' }]);
  unknownKeys(input, '', TOP_KEYS, bad);

  const name = input['name'];
  if (typeof name !== 'string' || !NAME_RE.test(name)) bad('name', 'name is required: 1-63 letters, digits, ".", "_" or "-"');
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
    bad('protectionGroups', 'a plan recovers one or more protection groups (protectionGroups) or protected VMs (protectedVms)');
  }
  const shutdownTimeoutSec = duration(input['shutdownTimeout'], 'shutdownTimeout', PLAN_DEFAULTS.shutdownTimeoutSec, 1, 24 * 3600, bad);
  const concurrency = integer(input['concurrency'], 'concurrency', PLAN_DEFAULTS.concurrency, 1, 64, bad);

  const vms: Record<string, PlanVmOptions> = {};
  const rawVms = input['vms'] ?? {};
  if (!isRecord(rawVms)) bad('vms', 'vms is a mapping from VM name to its options');
  else {
    for (const [vm, raw] of Object.entries(rawVms)) {
      const p = `vms.${vm}`;
      if (!NAME_RE.test(vm)) bad(p, `${JSON.stringify(vm)} is not a VM name`);
      const o = raw ?? {};
      if (!isRecord(o)) {
        bad(p, `the options of ${vm} are a mapping (priority, powerOn, waitHeartbeat, dependsOn, recoveryIp, testIp)`);
        continue;
      }
      unknownKeys(o, p, VM_KEYS, bad);
      const dependsOn = o['dependsOn'] ?? [];
      if (!Array.isArray(dependsOn) || !dependsOn.every((d) => typeof d === 'string')) bad(`${p}.dependsOn`, 'dependsOn is a list of VM names');
      const powerOn = o['powerOn'] ?? PLAN_DEFAULTS.powerOn;
      if (typeof powerOn !== 'boolean') bad(`${p}.powerOn`, 'powerOn is true or false');
      const recoveryIp = ip(o['recoveryIp'], `${p}.recoveryIp`, bad);
      const testIp = ip(o['testIp'], `${p}.testIp`, bad);
      vms[vm] = {
        priority: integer(o['priority'], `${p}.priority`, PLAN_DEFAULTS.priority, 1, 5, bad),
        powerOn: powerOn === true,
        waitHeartbeatSec: duration(o['waitHeartbeat'], `${p}.waitHeartbeat`, PLAN_DEFAULTS.waitHeartbeatSec, 0, 24 * 3600, bad),
        dependsOn: Array.isArray(dependsOn) ? dependsOn.filter((d): d is string => typeof d === 'string') : [],
        ...(recoveryIp ? { recoveryIp } : {}),
        ...(testIp ? { testIp } : {}),
      };
    }
    checkDependencies(vms, bad);
  }
  const protectedSite = input['protectedSite'] ?? null;
  if (protectedSite !== null && (typeof protectedSite !== 'string' || !NAME_RE.test(protectedSite))) bad('protectedSite', 'protectedSite is the name of a paired site');
  const steps = planSteps(input['steps'], vms, bad);
  if (problems.length > 0) throw planInvalid(source, problems);
  return {
    name: name as string, description: description as string, protectedSite: protectedSite as string | null,
    protectionGroups: groups as string[], protectedVms: singles as string[], shutdownTimeoutSec, concurrency, vms, steps,
  };
}

/**
 * steps: [{ before: "priority 2" | after: "vm db1", command: [argv...] | prompt: "text", timeout: 60s, modes: [test] }]
 * A command runs on the recovery site's server as an argument array (no shell); a prompt
 * pauses the run until `mamori plan continue RUN`.
 */
function planSteps(raw: unknown, vms: Record<string, PlanVmOptions>, bad: (path: string, message: string) => void): PlanStep[] {
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
    if ((st['before'] === undefined) === (st['after'] === undefined)) return bad(p, 'a step has exactly one of before or after');
    const at = st['before'] !== undefined ? 'before' : 'after';
    const m = typeof where === 'string' ? /^(priority)\s+([1-5])$|^(vm)\s+(\S+)$/.exec(where.trim()) : null;
    if (!m) return bad(`${p}.${at}`, `${at} is "priority N" (1-5) or "vm NAME"`);
    const scope: PlanStep['scope'] = m[1] ? { kind: 'priority', priority: Number(m[2]) } : { kind: 'vm', vm: m[4]! };
    if (scope.kind === 'vm' && vms[scope.vm] === undefined) return bad(`${p}.${at}`, `step ${at} vm ${scope.vm}: the plan does not list ${scope.vm} under vms`);
    const modes = st['modes'] ?? [...STEP_MODES];
    if (!Array.isArray(modes) || modes.length === 0 || !modes.every((x) => (STEP_MODES as readonly unknown[]).includes(x))) return bad(`${p}.modes`, `modes is a list of ${STEP_MODES.join(', ')}`);
    if ((st['command'] === undefined) === (st['prompt'] === undefined)) return bad(p, 'a step has exactly one of command or prompt');
    let action: PlanStep['action'];
    if (st['command'] !== undefined) {
      const argv = st['command'];
      if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string' && a.length > 0) || !String(argv[0]).startsWith('/')) {
        return bad(`${p}.command`, 'command is a list: an absolute program path and its arguments (no shell), e.g. ["/usr/bin/logger", "db up"]');
      }
      action = { kind: 'command', argv: argv as string[], timeoutSec: duration(st['timeout'], `${p}.timeout`, 300, 1, 24 * 3600, bad) };
    } else {
      if (typeof st['prompt'] !== 'string' || st['prompt'].trim() === '') return bad(`${p}.prompt`, 'prompt is the text shown while the run waits');
      if (st['timeout'] !== undefined) return bad(`${p}.timeout`, 'a prompt waits for `mamori plan continue`; it has no timeout');
      action = { kind: 'prompt', message: st['prompt'] };
    }
    out.push({ at, scope, action, modes: modes as StepMode[] });
  });
  return out;
}

/**
 * Dependencies: on VMs the plan lists, never on a later priority (it would never have
 * started), never on itself, and without cycles among VMs of one priority.
 */
function checkDependencies(vms: Record<string, PlanVmOptions>, bad: (path: string, message: string) => void): void {
  for (const [vm, o] of Object.entries(vms)) {
    for (const d of o.dependsOn) {
      const target = vms[d];
      if (d === vm) bad(`vms.${vm}.dependsOn`, `${vm} depends on itself`);
      else if (target === undefined) bad(`vms.${vm}.dependsOn`, `${vm} depends on ${d}, which the plan does not list under vms`);
      else if (target.priority > o.priority) {
        bad(`vms.${vm}.dependsOn`, `${vm} (priority ${o.priority}) depends on ${d} of the later priority ${target.priority}: ${d} would not have started yet`);
      }
    }
  }
  const state = new Map<string, 'visiting' | 'done'>();
  const reported = new Set<string>();
  const visit = (vm: string, trail: string[]): void => {
    if (state.get(vm) === 'done') return;
    if (state.get(vm) === 'visiting') {
      const cycle = [...trail.slice(trail.indexOf(vm)), vm];
      const key = [...cycle].sort().join(',');
      if (!reported.has(key)) {
        reported.add(key);
        bad(`vms.${vm}.dependsOn`, `dependency cycle: ${cycle.join(' -> ')}`);
      }
      return;
    }
    state.set(vm, 'visiting');
    for (const d of vms[vm]?.dependsOn ?? []) if (d !== vm && vms[d]?.priority === vms[vm]!.priority) visit(d, [...trail, vm]);
    state.set(vm, 'done');
  };
  for (const vm of Object.keys(vms)) visit(vm, []);
}

function ip(raw: unknown, path: string, bad: (path: string, message: string) => void): IpCustomization | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isRecord(raw)) {
    bad(path, 'an IP customization is a mapping with address (CIDR), and optionally gateway and dns');
    return undefined;
  }
  unknownKeys(raw, path, IP_KEYS, bad);
  const address = raw['address'];
  if (typeof address !== 'string') {
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
    if (g === null) bad(`${path}.gateway`, `${JSON.stringify(gateway)} is not an IPv4 address`);
    else if (!inNetwork(g, net)) bad(`${path}.gateway`, `gateway ${String(gateway)} is outside the network of ${address}`);
    else if (g === parseIpv4(net.address)) bad(`${path}.gateway`, `gateway ${String(gateway)} is the VM's own address`);
    else out.gateway = gateway as string;
  }
  const dns = raw['dns'];
  if (dns !== undefined) {
    if (!Array.isArray(dns) || !dns.every((d) => typeof d === 'string' && parseIpv4(d) !== null)) bad(`${path}.dns`, 'dns is a list of IPv4 addresses');
    else out.dns = dns as string[];
  }
  return out;
}

function integer(raw: unknown, path: string, dflt: number, min: number, max: number, bad: (path: string, message: string) => void): number {
  if (raw === undefined) return dflt;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < min || raw > max) {
    bad(path, `${path.split('.').at(-1)} must be a whole number from ${min} to ${max} (got ${JSON.stringify(raw)})`);
    return dflt;
  }
  return raw;
}

/** `90`, `90s`, `5m`, `1h` -> seconds. */
function duration(raw: unknown, path: string, dflt: number, min: number, max: number, bad: (path: string, message: string) => void): number {
  if (raw === undefined) return dflt;
  const m = typeof raw === 'number' ? [String(raw), String(raw), 's'] : typeof raw === 'string' ? /^(\d+)\s*(s|m|h)?$/.exec(raw.trim()) : null;
  const secs = m ? Number(m[1]) * { s: 1, m: 60, h: 3600 }[(m[2] ?? 's') as 's' | 'm' | 'h'] : NaN;
  if (!Number.isInteger(secs) || secs < min || secs > max) {
    bad(path, `${path.split('.').at(-1)} must be a duration such as 90s, 5m or 1h, from ${min} s to ${max / 3600} h (got ${JSON.stringify(raw)})`);
    return dflt;
  }
  return secs;
}

function unknownKeys(o: Record<string, unknown>, path: string, known: readonly string[], bad: (path: string, message: string) => void): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) bad(path ? `${path}.${k}` : k, `unknown key ${JSON.stringify(k)}${path ? ` in ${path}` : ''} (known: ${known.join(', ')})`);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The document as plain data, recording the line of every path on the way (a key's own line for its path). */
function toPlain(node: Node | null, path: string, lineAt: Map<string, number>, lines: LineCounter): unknown {
  if (node === null) return null;
  if (node.range && !lineAt.has(path)) lineAt.set(path, lines.linePos(node.range[0]).line);
  if (isMap(node)) {
    const out: Record<string, unknown> = {};
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const p = path ? `${path}.${key}` : key;
      const keyNode = pair.key as Node | null;
      if (keyNode?.range) lineAt.set(p, lines.linePos(keyNode.range[0]).line);
      out[key] = toPlain(pair.value as Node | null, p, lineAt, lines);
    }
    return out;
  }
  if (isSeq(node)) return node.items.map((item, i) => toPlain(item as Node | null, `${path}.${i}`, lineAt, lines));
  if (isScalar(node)) return node.value;
  return node.toJSON();
}

function planInvalid(source: string, problems: PlanProblem[]): MamoriError {
  const text = problems.map((p) => `${source}${p.line === null ? '' : ` line ${p.line}`}: ${p.message}`).join('; ');
  return new MamoriError('INVALID_INPUT', `the plan is not valid, nothing was changed: ${text}`, { details: { problems } });
}

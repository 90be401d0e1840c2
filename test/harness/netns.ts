import { randomBytes } from 'node:crypto';
import { runProcess, type RunOptions, type RunResult } from '../../src/core/run-process.js';

const IP_TIMEOUT_MS = 10_000;

function ip(args: string[]): Promise<RunResult> {
  return runProcess('ip', args, { timeoutMs: IP_TIMEOUT_MS });
}

/** A short random tag for names unique to one test run: `mamori-<pid>-<tag>-a`. */
export function runTag(): string {
  return `${process.pid}-${randomBytes(3).toString('hex')}`;
}

/**
 * A network namespace this test made, known by its own name. Everything inside it (a site
 * server, the QEMUs and storage daemons it starts) sees only its loopback and the veth
 * links given to it; the root namespace cannot reach it, nor it the root namespace.
 */
export class NetNs {
  readonly name: string;
  /**
   * Run programs in the network namespace only (nsenter --net), sharing the host's mount
   * namespace: `ip netns exec` gives each a mount namespace of its own, which does not see
   * mounts made later on the host (this machine's / is a private mount), such as the
   * datasets the zfs-fuse daemon mounts when an adapter clones or fails one over.
   */
  hostMounts = false;
  #deleted = false;

  private constructor(name: string) {
    this.name = name;
  }

  /** `ip netns add NAME` and loopback up. */
  static async create(name: string): Promise<NetNs> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) throw new Error(`bad namespace name ${JSON.stringify(name)}`);
    await ip(['netns', 'add', name]);
    const ns = new NetNs(name);
    try {
      await ns.ip(['link', 'set', 'lo', 'up']);
    } catch (e) {
      await ns.delete();
      throw e;
    }
    return ns;
  }

  /** An `ip` command run against this namespace (`ip -n NAME ...`). */
  ip(args: string[]): Promise<RunResult> {
    return ip(['-n', this.name, ...args]);
  }

  /** The argv that runs a program inside this namespace (ip netns exec execs in place: same pid). */
  wrap(file: string, args: readonly string[]): [string, string[]] {
    if (this.hostMounts) return ['nsenter', [`--net=/var/run/netns/${this.name}`, '--', file, ...args]];
    return ['ip', ['netns', 'exec', this.name, file, ...args]];
  }

  run(file: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    const [f, a] = this.wrap(file, args);
    return runProcess(f, a, opts);
  }

  /** Pids of every process whose network namespace is this one. */
  async pids(): Promise<number[]> {
    if (this.#deleted) return [];
    const r = await ip(['netns', 'pids', this.name]).catch(() => undefined);
    return (r?.stdout ?? '')
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  }

  /**
   * Kills whatever still runs inside (SIGKILL, by pid: only processes in this namespace),
   * then deletes the namespace, which takes its veth ends with it. Safe to call twice.
   */
  async delete(): Promise<void> {
    if (this.#deleted) return;
    for (let round = 0; round < 20; round++) {
      const pids = await this.pids();
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await ip(['netns', 'del', this.name]).catch(() => undefined);
    this.#deleted = true;
  }
}

export type CutMode = 'blackhole' | 'down';

/**
 * A veth pair between two namespaces, with an address on each end in one /30.
 * cut('blackhole') makes each side resolve the other to a MAC nobody has, so packets
 * vanish silently both ways, as when a WAN link dies: connections hang until their
 * deadlines. cut('down') sets both ends down: senders get ENETUNREACH at once.
 * Neither needs tc (sch_netem) or iptables.
 */
export class VethLink {
  readonly a: { ns: NetNs; dev: string; address: string };
  readonly b: { ns: NetNs; dev: string; address: string };
  #cut: CutMode | null = null;

  private constructor(a: VethLink['a'], b: VethLink['b']) {
    this.a = a;
    this.b = b;
  }

  /** `addresses`: the two host addresses of a /30, e.g. ['10.213.0.1', '10.213.0.2']. */
  static async create(
    a: NetNs,
    b: NetNs,
    opts: { devA: string; devB: string; addresses: [string, string] },
  ): Promise<VethLink> {
    for (const d of [opts.devA, opts.devB])
      if (d.length > 15) throw new Error(`interface name ${d} is longer than 15 characters`);
    await ip(['link', 'add', opts.devA, 'netns', a.name, 'type', 'veth', 'peer', 'name', opts.devB, 'netns', b.name]);
    const link = new VethLink(
      { ns: a, dev: opts.devA, address: opts.addresses[0] },
      { ns: b, dev: opts.devB, address: opts.addresses[1] },
    );
    for (const end of [link.a, link.b]) {
      await end.ns.ip(['addr', 'add', `${end.address}/30`, 'dev', end.dev]);
      await end.ns.ip(['link', 'set', end.dev, 'up']);
    }
    return link;
  }

  get isCut(): boolean {
    return this.#cut !== null;
  }

  async cut(mode: CutMode = 'blackhole'): Promise<void> {
    if (this.#cut) await this.restore();
    if (mode === 'down') {
      for (const end of [this.a, this.b]) await end.ns.ip(['link', 'set', end.dev, 'down']);
    } else {
      const pairs = [
        [this.a, this.b],
        [this.b, this.a],
      ] as const;
      for (const [from, to] of pairs) {
        await from.ns.ip([
          'neigh',
          'replace',
          to.address,
          'lladdr',
          '02:00:00:00:de:ad',
          'nud',
          'permanent',
          'dev',
          from.dev,
        ]);
      }
    }
    this.#cut = mode;
  }

  async restore(): Promise<void> {
    if (this.#cut === 'down') {
      for (const end of [this.a, this.b]) await end.ns.ip(['link', 'set', end.dev, 'up']);
    } else if (this.#cut === 'blackhole') {
      const pairs = [
        [this.a, this.b],
        [this.b, this.a],
      ] as const;
      for (const [from, to] of pairs)
        await from.ns.ip(['neigh', 'del', to.address, 'dev', from.dev]).catch(() => undefined);
    }
    this.#cut = null;
  }
}

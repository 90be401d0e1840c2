import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runProcess } from '../../src/core/run-process.js';
import { NetNs, type CutMode } from './netns.js';
import { delayBufferBytes, tbfParams, wanProfile, type WanProfile, type WanProfileName } from './wan-profile.js';

/** 'reset': the forwarders reset every open connection and every new one (a firewall's tcp-reset). */
export type WanCutMode = CutMode | 'reset';

interface End {
  ns: NetNs;
  /** The site's end of its veth to the middle namespace (tbf sits on its egress). */
  dev: string;
  address: string;
  /** The middle namespace's end of the same veth. */
  middleDev: string;
}

const FORWARDER = fileURLToPath(new URL('./delay-forwarder.js', import.meta.url));
const READY_TIMEOUT_MS = 30_000;

/**
 * An emulated WAN between two namespaces, transparent to both: each side keeps the address it
 * would have on a direct veth (a /30), and a connection to the other's address on a forwarded
 * port arrives there from the peer's own address, through a middle namespace:
 *
 *   ns a: dev (10.213.0.1/30, tbf) ── middleDev (10.213.0.2/32) ┐ middle ns:  delay-forwarder per
 *   ns b: dev (10.213.0.2/30, tbf) ── middleDev (10.213.0.1/32) ┘ port and direction, RTT/2 each way
 *
 * The middle namespace answers for each site's peer address on that site's veth, so a site's
 * connect to its peer ends at a forwarder there. The forwarder dials the same address again;
 * a policy rule sends the middle's own (locally made) packets by table 100, which routes each
 * site address out of its veth, ahead of the local table that would deliver them inside.
 * accept_local lets the replies in (their source is an address the middle also holds). So the
 * sites see the real peer address and certificate and pair by their ordinary URLs.
 *
 * Rate: tc tbf on each site's veth egress, i.e. before the delay line, so a forwarder holds
 * about rate x RTT/2 per direction at full rate. Only the given ports pass (default: the site
 * API port); the middle namespace does not route, so other ports are refused there.
 *
 * The sites' TCP stacks see a near-zero RTT to the forwarder: their windows and congestion
 * control are not what is exercised, the application's round trips and the rate are.
 */
export class WanLink {
  readonly profile: WanProfile;
  readonly a: End;
  readonly b: End;
  readonly middle: NetNs;
  readonly ports: readonly number[];
  /** The forwarders' read batching (DelayLine readBatchMs). */
  readonly readBatchMs: number;
  #forwarders: ChildProcess[] = [];
  #forwarderLog = '';
  #cut: WanCutMode | null = null;
  #destroyed = false;

  private constructor(
    profile: WanProfile,
    a: End,
    b: End,
    middle: NetNs,
    ports: readonly number[],
    readBatchMs: number,
  ) {
    this.profile = profile;
    this.readBatchMs = readBatchMs;
    this.a = a;
    this.b = b;
    this.middle = middle;
    this.ports = ports;
  }

  /**
   * `tag`: up to 6 characters unique to this run, for device names (`mm<tag>a`, `mm<tag>wa`...);
   * `middleName`: the middle namespace's name. On failure, removes what it made.
   */
  static async create(
    a: NetNs,
    b: NetNs,
    opts: {
      profile: WanProfile | WanProfileName;
      tag: string;
      middleName: string;
      addresses: [string, string];
      ports?: number[];
      /**
       * Default: 1 ms where that is at most 4% of the one-way delay (RTT >= 50 ms), else 0. At
       * 100 Mbit/s it takes about 45% off the forwarder's CPU (segments arrive one by one
       * through tbf); the cost is up to that much more delay on bytes that trickle in.
       */
      readBatchMs?: number;
    },
  ): Promise<WanLink> {
    if (!/^[a-z0-9]{1,6}$/.test(opts.tag)) throw new Error(`WAN link tag must be 1-6 of [a-z0-9], got ${opts.tag}`);
    const profile = wanProfile(opts.profile);
    const middle = await NetNs.create(opts.middleName);
    const link = new WanLink(
      profile,
      { ns: a, dev: `mm${opts.tag}a`, address: opts.addresses[0], middleDev: `mm${opts.tag}wa` },
      { ns: b, dev: `mm${opts.tag}b`, address: opts.addresses[1], middleDev: `mm${opts.tag}wb` },
      middle,
      opts.ports ?? [8443],
      opts.readBatchMs ?? (profile.rttMs >= 50 ? 1 : 0),
    );
    try {
      await link.#build();
      return link;
    } catch (e) {
      await link.destroy().catch(() => undefined);
      throw e;
    }
  }

  async #build(): Promise<void> {
    const m = this.middle;
    const t = tbfParams(this.profile);
    for (const [end, other] of [
      [this.a, this.b],
      [this.b, this.a],
    ] as const) {
      await runIp([
        'link',
        'add',
        end.dev,
        'netns',
        end.ns.name,
        'type',
        'veth',
        'peer',
        'name',
        end.middleDev,
        'netns',
        m.name,
      ]);
      await end.ns.ip(['addr', 'add', `${end.address}/30`, 'dev', end.dev]);
      await end.ns.ip(['link', 'set', end.dev, 'up']);
      // The middle answers for the peer's address on this side...
      await m.ip(['addr', 'add', `${other.address}/32`, 'dev', end.middleDev]);
      await m.ip(['link', 'set', end.middleDev, 'up']);
      // ...and reaches this side's own address out of this veth (table 100, locally made packets).
      await this.#routeOut(end);
      // While that route is gone (its veth down) an upstream connect must fail, not fall through
      // to the local table and reach the forwarder itself.
      await m.ip(['route', 'add', 'unreachable', `${end.address}/32`, 'table', '100', 'metric', '1000']);
      await runProcess(
        'tc',
        [
          '-n',
          end.ns.name,
          'qdisc',
          'replace',
          'dev',
          end.dev,
          'root',
          'tbf',
          'rate',
          `${t.rateBit}bit`,
          'burst',
          String(t.burstBytes),
          'limit',
          String(t.limitBytes),
        ],
        { timeoutMs: 10_000 },
      );
    }
    await m.ip(['rule', 'add', 'pref', '10', 'iif', 'lo', 'lookup', '100']);
    await m.ip(['rule', 'add', 'pref', '100', 'lookup', 'local']);
    await m.ip(['rule', 'del', 'pref', '0']);
    const conf = ['all', 'default', this.a.middleDev, this.b.middleDev];
    await m.run(
      'sysctl',
      ['-q', '-w', ...conf.flatMap((d) => [`net.ipv4.conf.${d}.accept_local=1`, `net.ipv4.conf.${d}.rp_filter=0`])],
      {
        timeoutMs: 10_000,
      },
    );
    for (const port of this.ports) {
      for (const to of [this.a, this.b]) await this.#startForwarder(`${to.address}:${port}`);
    }
  }

  #routeOut(end: End): Promise<unknown> {
    return this.middle.ip(['route', 'replace', `${end.address}/32`, 'dev', end.middleDev, 'table', '100']);
  }

  async #startForwarder(target: string): Promise<void> {
    const [file, args] = this.middle.wrap(process.execPath, [
      FORWARDER,
      '--listen',
      target,
      '--connect',
      target,
      '--delay-ms',
      String(this.profile.rttMs / 2),
      '--max-buffer-bytes',
      String(delayBufferBytes(this.profile)),
      '--read-batch-ms',
      String(this.readBatchMs),
    ]);
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#forwarders.push(child);
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.#forwarderLog += c));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new Error(`delay-forwarder for ${target} not ready: ${this.#forwarderLog}`)),
        READY_TIMEOUT_MS,
      );
      child.stdout!.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (out.includes('listening\n')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`delay-forwarder for ${target} exited (${code ?? signal}): ${this.#forwarderLog}`));
      });
    });
  }

  /** Pids of the forwarder processes still running. */
  get forwarderPids(): number[] {
    return this.#forwarders.filter((c) => c.exitCode === null && c.signalCode === null).map((c) => c.pid!);
  }

  /** What the forwarders wrote on stderr (for a failing test's message). */
  get forwarderLog(): string {
    return this.#forwarderLog;
  }

  get isCut(): boolean {
    return this.#cut !== null;
  }

  /**
   * 'blackhole' (default): each end resolves the address across to a MAC nobody has, so packets
   * vanish both ways and open connections hang until their deadlines, and resume on restore.
   * 'down': every veth end down: a site's sends fail with ENETUNREACH at once.
   * 'reset': the forwarders reset open connections and refuse new ones with a reset.
   */
  async cut(mode: WanCutMode = 'blackhole'): Promise<void> {
    if (this.#cut) await this.restore();
    if (mode === 'down') {
      for (const end of [this.a, this.b]) {
        await end.ns.ip(['link', 'set', end.dev, 'down']);
        await this.middle.ip(['link', 'set', end.middleDev, 'down']);
      }
    } else if (mode === 'blackhole') {
      for (const [end, other] of this.#pairs()) {
        await neighbour(end.ns, other.address, end.dev, 'replace');
        await neighbour(this.middle, end.address, end.middleDev, 'replace');
      }
    } else {
      for (const c of this.#forwarders) c.kill('SIGUSR1');
    }
    this.#cut = mode;
  }

  async restore(): Promise<void> {
    if (this.#cut === 'down') {
      for (const end of [this.a, this.b]) {
        await end.ns.ip(['link', 'set', end.dev, 'up']);
        await this.middle.ip(['link', 'set', end.middleDev, 'up']);
        // A device going down takes its routes with it; the kernel restores only the connected ones.
        await this.#routeOut(end);
      }
    } else if (this.#cut === 'blackhole') {
      for (const [end, other] of this.#pairs()) {
        await neighbour(end.ns, other.address, end.dev, 'del').catch(() => undefined);
        await neighbour(this.middle, end.address, end.middleDev, 'del').catch(() => undefined);
      }
    } else if (this.#cut === 'reset') {
      for (const c of this.#forwarders) c.kill('SIGUSR2');
    }
    this.#cut = null;
  }

  #pairs(): [End, End][] {
    return [
      [this.a, this.b],
      [this.b, this.a],
    ];
  }

  /**
   * Stops the forwarders (SIGTERM, then SIGKILL; by their own pids) and deletes the middle
   * namespace, which takes both veth pairs, and so the tbf qdiscs on the site ends, with it.
   * The site namespaces are the caller's. Safe to call twice.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await Promise.all(
      this.#forwarders.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
            c.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            c.kill('SIGTERM');
          }),
      ),
    );
    await this.middle.delete();
  }
}

function runIp(args: string[]): Promise<unknown> {
  return runProcess('ip', args, { timeoutMs: 10_000 });
}

function neighbour(ns: NetNs, address: string, dev: string, op: 'replace' | 'del'): Promise<unknown> {
  const args = ['neigh', op, address];
  if (op === 'replace') args.push('lladdr', '02:00:00:00:de:ad', 'nud', 'permanent');
  return ns.ip([...args, 'dev', dev]);
}

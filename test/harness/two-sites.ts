import { after, before } from 'node:test';
import { NetNs, VethLink, runTag, type CutMode } from './netns.js';
import { SiteProcess, type CliResult } from './site-process.js';
import { WanLink, type WanCutMode } from './wan-link.js';
import type { WanProfile, WanProfileName } from './wan-profile.js';

export const SITE_PORT = 8443;

/**
 * Two real sites, each `mamori serve` in its own network namespace, joined by one veth
 * link in a /30 (10.213.0.1 for site-a, 10.213.0.2 for site-b; the namespaces are private
 * to this run, so the same addresses in another run do not clash). The root namespace
 * cannot reach either, so the CLI runs inside the site's namespace (site.cli()).
 *
 * Names carry the test process's pid and a random tag: `mamori-<pid>-<tag>-a` / `-b`, and
 * veth ends `mm<tag>a` / `mm<tag>b`. destroy() removes exactly those.
 *
 *   const sites = await TwoSites.create();
 *   after(() => sites.destroy());          // also runs when the test failed
 *   await sites.a.cliJson('site', 'pair', sites.b.url, '--token', await sites.b.adminToken());
 *   await sites.cutLink(); ... await sites.restoreLink();
 *
 * With `wan: '100m-50ms'` (a WAN_PROFILES name or a WanProfile) the sites are joined through
 * an emulated WAN instead (wan-link.ts): same addresses, URLs and certificates, but a middle
 * namespace `mamori-<pid>-<tag>-w` adds the profile's delay and rate to the site API port
 * (and any `wanPorts`); other ports do not cross.
 */
export class TwoSites {
  readonly tag: string;
  readonly a: SiteProcess;
  readonly b: SiteProcess;
  readonly link: VethLink | WanLink;
  readonly namespaces: NetNs[];

  private constructor(tag: string, a: SiteProcess, b: SiteProcess, link: VethLink | WanLink, namespaces: NetNs[]) {
    this.tag = tag;
    this.a = a;
    this.b = b;
    this.link = link;
    this.namespaces = namespaces;
  }

  /** Makes the namespaces and link, starts both servers; on any failure undoes what it made. */
  /** hostMounts: the sites see mounts made on the host after they started (see NetNs.hostMounts). */
  /** db: a PostgreSQL URL for either site (SiteProcessOptions.db); a site without one keeps SQLite. */
  /** wan: an emulated WAN link instead of the veth; wanPorts: the ports it forwards (default [SITE_PORT]). */
  static async create(
    opts: {
      names?: [string, string];
      start?: boolean;
      hostMounts?: boolean;
      db?: { a?: string; b?: string };
      wan?: WanProfile | WanProfileName;
      wanPorts?: number[];
    } = {},
  ): Promise<TwoSites> {
    const tag = runTag();
    const short = tag.split('-')[1]!;
    const [nameA, nameB] = opts.names ?? ['site-a', 'site-b'];
    const made: NetNs[] = [];
    const sites: SiteProcess[] = [];
    let wan: WanLink | undefined;
    try {
      made.push(await NetNs.create(`mamori-${tag}-a`));
      made.push(await NetNs.create(`mamori-${tag}-b`));
      const [nsA, nsB] = made as [NetNs, NetNs];
      for (const ns of made) ns.hostMounts = opts.hostMounts ?? false;
      const addresses: [string, string] = ['10.213.0.1', '10.213.0.2'];
      const link = opts.wan
        ? (wan = await WanLink.create(nsA, nsB, {
            profile: opts.wan,
            tag: short,
            middleName: `mamori-${tag}-w`,
            addresses,
            ports: opts.wanPorts ?? [SITE_PORT],
          }))
        : await VethLink.create(nsA, nsB, { devA: `mm${short}a`, devB: `mm${short}b`, addresses });
      const db = opts.db ?? {};
      sites.push(await SiteProcess.create(nameA, { netns: nsA, listen: `${link.a.address}:${SITE_PORT}`, db: db.a }));
      sites.push(await SiteProcess.create(nameB, { netns: nsB, listen: `${link.b.address}:${SITE_PORT}`, db: db.b }));
      const two = new TwoSites(tag, sites[0]!, sites[1]!, link, made);
      if (opts.start ?? true) await Promise.all([two.a.start(), two.b.start()]);
      return two;
    } catch (e) {
      for (const s of sites) await s.destroy().catch(() => undefined);
      await wan?.destroy().catch(() => undefined);
      for (const ns of made) await ns.delete().catch(() => undefined);
      throw e;
    }
  }

  site(which: 'a' | 'b'): SiteProcess {
    return which === 'a' ? this.a : this.b;
  }

  cli(which: 'a' | 'b', ...args: string[]): Promise<CliResult> {
    return this.site(which).cli(...args);
  }

  cliJson<T>(which: 'a' | 'b', ...args: string[]): Promise<T> {
    return this.site(which).cliJson<T>(...args);
  }

  /** Pairs a with b and b with a (each side with the other's admin token). */
  async pairBothWays(): Promise<void> {
    await this.a.cliJson('site', 'pair', this.b.url, '--token', await this.b.adminToken());
    await this.b.cliJson('site', 'pair', this.a.url, '--token', await this.a.adminToken());
  }

  /**
   * 'blackhole' (default): packets vanish silently both ways; 'down': both veth ends down;
   * 'reset' (WAN link only): every connection across is reset.
   */
  cutLink(mode: WanCutMode = 'blackhole'): Promise<void> {
    if (this.link instanceof WanLink) return this.link.cut(mode);
    if (mode === 'reset') throw new Error("cut mode 'reset' needs a WAN link: TwoSites.create({ wan: ... })");
    return this.link.cut(mode satisfies CutMode);
  }

  restoreLink(): Promise<void> {
    return this.link.restore();
  }

  /**
   * Stops both servers, kills the QEMUs they reported (vm list --json) and then anything
   * else still running inside the two namespaces (storage daemons, qemu-nbd), deletes the
   * namespaces by their own names (the veth pair goes with them) and the data folders; a WAN
   * link's forwarders and middle namespace go too. Every step runs even if an earlier one failed.
   */
  async destroy(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    };
    await step(() => this.link.restore());
    for (const s of [this.a, this.b]) await step(async () => (await s.vmPids()).forEach((p) => s.trackPid(p)));
    for (const s of [this.a, this.b]) await step(() => s.stopServer());
    for (const s of [this.a, this.b]) await step(() => s.destroy());
    if (this.link instanceof WanLink) await step(() => (this.link as WanLink).destroy());
    for (const ns of this.namespaces) await step(() => ns.delete());
    if (errors.length) throw new AggregateError(errors, `two-sites cleanup had ${errors.length} error(s)`);
  }
}

/**
 * Two sites paired both ways for a test file: made before its tests run, destroyed after them
 * (also when one failed). Returns their getter: `const sites = pairedSitesForFile();` then
 * `sites().a` inside the tests.
 */
export function pairedSitesForFile(): () => TwoSites {
  let sites: TwoSites | undefined;
  before(async () => {
    sites = await TwoSites.create();
    await sites.pairBothWays();
  });
  after(async () => {
    await sites?.destroy();
  });
  return () => {
    if (sites === undefined) throw new Error('the sites are made in before(): use them inside a test');
    return sites;
  };
}

import { createHash } from 'node:crypto';
import type { StoreHandle } from '../store/store-handle.js';
import { NetworkRepo } from '../store/repos/network-repo.js';
import { assertValidName } from '../core/names.js';
import { MamoriError } from '../core/mamori-error.js';
import { runProcess } from '../core/run-process.js';
import type { Logger } from '../core/logger.js';

export const NETWORK_KINDS = ['isolated', 'bridge'] as const;
export type NetworkKind = (typeof NETWORK_KINDS)[number];

/** Networks every site has without creating them; a VM NIC names one of these or a site network. */
export const BUILTIN_NETWORKS = ['user', 'none'] as const;

export interface NetworkView {
  name: string;
  /** builtin: QEMU user-mode ('user') or no link ('none'). */
  kind: NetworkKind | 'builtin';
  bridge: string | null;
  createdAt: string | null;
}

/**
 * The networks of a site, as an operator of Proxmox (vmbrN) or vSphere (port groups) expects:
 *  - `isolated`: a Linux bridge mamori makes with no uplink; only VM taps join it, so guests on
 *    it reach each other and nothing else. Recovery plans use one as the test network.
 *  - `bridge`: an existing host bridge named by the operator (mamori never changes it).
 * A VM's NIC on either gets a tap that QEMU creates (and removes when it exits) and the
 * supervisor puts on the bridge before the guest runs.
 */
export class SiteNetworks {
  #networks: NetworkRepo;
  #log: Logger;

  constructor(deps: { db: StoreHandle; log: Logger }) {
    this.#networks = new NetworkRepo(deps.db);
    this.#log = deps.log;
  }

  async list(): Promise<NetworkView[]> {
    const rows = await this.#networks.list();
    return [
      ...BUILTIN_NETWORKS.map((name) => ({ name, kind: 'builtin' as const, bridge: null, createdAt: null })),
      ...rows.map((r) => ({ name: r.name, kind: r.kind as NetworkKind, bridge: r.bridge, createdAt: r.createdAt })),
    ];
  }

  async get(name: string): Promise<NetworkView> {
    const n = (await this.list()).find((x) => x.name === name);
    if (!n)
      throw new MamoriError(
        'NETWORK_NOT_FOUND',
        `no network named ${JSON.stringify(name)} on this site; see 'mamori network list'`,
        { details: { name } },
      );
    return n;
  }

  /** The bridge a NIC on this network joins, or null for the built-in networks. */
  async bridgeOf(name: string): Promise<string | null> {
    return (await this.get(name)).bridge;
  }

  async create(input: { name: string; kind: NetworkKind; bridge?: string }): Promise<NetworkView> {
    assertValidName('network', input.name);
    if ((BUILTIN_NETWORKS as readonly string[]).includes(input.name))
      throw new MamoriError('NETWORK_EXISTS', `${input.name} is a built-in network`, { details: { name: input.name } });
    if (!(NETWORK_KINDS as readonly string[]).includes(input.kind))
      throw new MamoriError('INVALID_INPUT', `network kind must be one of ${NETWORK_KINDS.join(', ')}`);
    if (await this.#networks.exists(input.name)) {
      throw new MamoriError('NETWORK_EXISTS', `a network named ${input.name} already exists`, {
        details: { name: input.name },
      });
    }
    let bridge: string;
    if (input.kind === 'isolated') {
      if (input.bridge !== undefined)
        throw new MamoriError('INVALID_INPUT', 'an isolated network gets a bridge of its own; do not name one');
      bridge = isolatedBridgeName(input.name);
      await this.#ensureIsolatedBridge(bridge);
    } else {
      if (input.bridge === undefined || !/^[A-Za-z0-9_.-]{1,15}$/.test(input.bridge))
        throw new MamoriError(
          'INVALID_INPUT',
          'a bridge network needs --bridge NAME: an existing Linux bridge (at most 15 characters)',
        );
      bridge = input.bridge;
      if (!(await isBridge(bridge)))
        throw new MamoriError(
          'NETWORK_UNAVAILABLE',
          `host bridge ${bridge} does not exist; create it (ip link add ${bridge} type bridge) or name another`,
          { details: { bridge } },
        );
    }
    try {
      await this.#networks.insert({ name: input.name, kind: input.kind, bridge, createdAt: new Date().toISOString() });
    } catch (e) {
      if (input.kind === 'isolated') await deleteLink(bridge);
      throw e;
    }
    return this.get(input.name);
  }

  /** Refused while a VM has a NIC on it; removes the bridge of an isolated network. */
  async delete(name: string): Promise<void> {
    const n = await this.get(name);
    if (n.kind === 'builtin') throw new MamoriError('INVALID_INPUT', `${name} is built in and cannot be deleted`);
    const users = await this.#networks.vmsOn(name);
    if (users.length > 0)
      throw new MamoriError(
        'NETWORK_IN_USE',
        `network ${name} is used by ${users.join(', ')}; delete those VMs or move their NICs first`,
        { details: { vms: users } },
      );
    await this.#networks.delete(name);
    if (n.kind === 'isolated' && n.bridge) await deleteLink(n.bridge);
  }

  /** At server start (after a host reboot the bridges are gone): bring isolated bridges back. */
  async restore(): Promise<void> {
    for (const r of await this.#networks.isolated()) {
      await this.#ensureIsolatedBridge(r.bridge).catch((e: unknown) =>
        this.#log.error({ network: r.name, err: e }, 'could not restore the bridge of an isolated network'),
      );
    }
  }

  async #ensureIsolatedBridge(bridge: string): Promise<void> {
    if (!(await isBridge(bridge))) {
      try {
        await runProcess('ip', ['link', 'add', 'name', bridge, 'type', 'bridge'], { timeoutMs: 10_000 });
      } catch (e) {
        throw new MamoriError(
          'NETWORK_UNAVAILABLE',
          `could not make bridge ${bridge}: ${(e as Error).message}. mamori serve needs CAP_NET_ADMIN for isolated networks`,
          { cause: e },
        );
      }
    }
    await runProcess('ip', ['link', 'set', 'dev', bridge, 'up'], { timeoutMs: 10_000 });
  }
}

/** Linux interface names hold at most 15 bytes: a fixed prefix and a hash of the network name. */
export function isolatedBridgeName(network: string): string {
  return `mmbr${createHash('sha256').update(network).digest('hex').slice(0, 8)}`;
}

/** Puts a VM's tap on its bridge and up; called while QEMU is still paused (-S). */
export async function attachTap(tap: string, bridge: string): Promise<void> {
  try {
    await runProcess('ip', ['link', 'set', 'dev', tap, 'master', bridge], { timeoutMs: 10_000 });
    await runProcess('ip', ['link', 'set', 'dev', tap, 'up'], { timeoutMs: 10_000 });
  } catch (e) {
    throw new MamoriError('NETWORK_UNAVAILABLE', `could not put ${tap} on bridge ${bridge}: ${(e as Error).message}`, {
      cause: e,
      details: { tap, bridge },
    });
  }
}

/** The interfaces on a bridge (tests and reports show what an isolated network holds). */
export async function bridgePorts(bridge: string): Promise<string[]> {
  const { stdout } = await runProcess('ip', ['-o', 'link', 'show', 'master', bridge], { timeoutMs: 10_000 });
  return [...stdout.matchAll(/^\d+:\s+([^:@\s]+)/gm)].map((m) => m[1]!);
}

async function isBridge(name: string): Promise<boolean> {
  const r = await runProcess('ip', ['-d', 'link', 'show', 'dev', name], { timeoutMs: 10_000, okCodes: [0, 1] });
  return r.code === 0 && /\bbridge\b/.test(r.stdout);
}

async function deleteLink(name: string): Promise<void> {
  await runProcess('ip', ['link', 'del', 'dev', name], { timeoutMs: 10_000, okCodes: [0, 1, 2] });
}

import type { StoreHandle } from '../store/store-handle.js';
import { InventoryMappingRepo } from '../store/repos/inventory-mapping-repo.js';
import { MamoriError } from '../core/mamori-error.js';
import type { SiteNetworks } from '../networks/site-networks.js';

export const MAPPING_KINDS = ['network', 'pool'] as const;
export type MappingKind = (typeof MAPPING_KINDS)[number];

/** Storage pools of a site. One per site today (the disk pool folder); the mapping names it all the same. */
export const SITE_POOLS = ['default'] as const;

export interface MappingView {
  peer: string;
  kind: MappingKind;
  /** The peer's network or pool. */
  source: string;
  /** This site's network or pool that recovered VMs use. */
  target: string;
  /** Networks only: this site's isolated network for test recoveries. */
  testTarget: string | null;
  createdAt: string;
}

/**
 * Inventory mappings, as Site Recovery Manager's: how the protected site's networks and pools
 * map onto this (the recovery) site's. Kept at the recovery site, which runs the plans: a
 * disaster recovery must not need the protected site to tell it where VMs go.
 * Each site is one host, so there is no host mapping to keep.
 */
export class InventoryMappings {
  #repo: InventoryMappingRepo;
  #networks: SiteNetworks;
  #peerExists: (name: string) => Promise<void>;

  constructor(deps: { db: StoreHandle; networks: SiteNetworks; peerExists: (name: string) => Promise<void> }) {
    this.#repo = new InventoryMappingRepo(deps.db);
    this.#networks = deps.networks;
    this.#peerExists = deps.peerExists;
  }

  async set(input: {
    peer: string;
    kind: MappingKind;
    source: string;
    target: string;
    testTarget?: string;
  }): Promise<MappingView> {
    await this.#peerExists(input.peer);
    if (!(MAPPING_KINDS as readonly string[]).includes(input.kind))
      throw new MamoriError('INVALID_INPUT', `mapping kind must be one of ${MAPPING_KINDS.join(', ')}`);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(input.source))
      throw new MamoriError('INVALID_INPUT', `${JSON.stringify(input.source)} is not a ${input.kind} name`);
    if (input.kind === 'network') {
      await this.#networks.get(input.target);
      if (input.testTarget === undefined)
        throw new MamoriError(
          'INVALID_INPUT',
          'a network mapping needs a test network (--test NETWORK): an isolated network test recoveries use',
        );
      const test = await this.#networks.get(input.testTarget);
      if (test.kind !== 'isolated') {
        throw new MamoriError(
          'INVALID_INPUT',
          `test network ${input.testTarget} must be an isolated network (no link to the protected network or the outside); make one with 'mamori network create NAME --isolated'`,
          { details: { testTarget: input.testTarget, kind: test.kind } },
        );
      }
      if (input.testTarget === input.target)
        throw new MamoriError('INVALID_INPUT', 'the test network must not be the recovery network');
    } else {
      if (!(SITE_POOLS as readonly string[]).includes(input.target))
        throw new MamoriError(
          'INVALID_INPUT',
          `this site has no pool ${input.target}; its pools: ${SITE_POOLS.join(', ')}`,
        );
      if (input.testTarget !== undefined)
        throw new MamoriError('INVALID_INPUT', 'only network mappings have a test target');
    }
    const now = new Date().toISOString();
    await this.#repo.save(
      {
        peer: input.peer,
        kind: input.kind,
        source: input.source,
        target: input.target,
        testTarget: input.testTarget ?? null,
      },
      now,
    );
    return (await this.list({ peer: input.peer })).find((m) => m.kind === input.kind && m.source === input.source)!;
  }

  async list(filter: { peer?: string } = {}): Promise<MappingView[]> {
    return this.#repo.list(filter);
  }

  async delete(peer: string, kind: MappingKind, source: string): Promise<void> {
    if (!(await this.#repo.delete(peer, kind, source)))
      throw new MamoriError(
        'MAPPING_NOT_FOUND',
        `no ${kind} mapping of ${source} for peer ${peer}; see 'mamori mapping list'`,
      );
  }
}

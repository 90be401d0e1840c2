import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
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
  #db: Kysely<Database>;
  #networks: SiteNetworks;
  #peerExists: (name: string) => Promise<void>;

  constructor(deps: { db: Kysely<Database>; networks: SiteNetworks; peerExists: (name: string) => Promise<void> }) {
    this.#db = deps.db;
    this.#networks = deps.networks;
    this.#peerExists = deps.peerExists;
  }

  async set(input: { peer: string; kind: MappingKind; source: string; target: string; testTarget?: string }): Promise<MappingView> {
    await this.#peerExists(input.peer);
    if (!(MAPPING_KINDS as readonly string[]).includes(input.kind)) throw new MamoriError('INVALID_INPUT', `mapping kind must be one of ${MAPPING_KINDS.join(', ')}`);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(input.source)) throw new MamoriError('INVALID_INPUT', `${JSON.stringify(input.source)} is not a ${input.kind} name`);
    if (input.kind === 'network') {
      await this.#networks.get(input.target);
      if (input.testTarget === undefined) throw new MamoriError('INVALID_INPUT', 'a network mapping needs a test network (--test NETWORK): an isolated network test recoveries use');
      const test = await this.#networks.get(input.testTarget);
      if (test.kind !== 'isolated') {
        throw new MamoriError('INVALID_INPUT', `test network ${input.testTarget} must be an isolated network (no link to the protected network or the outside); make one with 'mamori network create NAME --isolated'`,
          { details: { testTarget: input.testTarget, kind: test.kind } });
      }
      if (input.testTarget === input.target) throw new MamoriError('INVALID_INPUT', 'the test network must not be the recovery network');
    } else {
      if (!(SITE_POOLS as readonly string[]).includes(input.target)) throw new MamoriError('INVALID_INPUT', `this site has no pool ${input.target}; its pools: ${SITE_POOLS.join(', ')}`);
      if (input.testTarget !== undefined) throw new MamoriError('INVALID_INPUT', 'only network mappings have a test target');
    }
    const now = new Date().toISOString();
    await this.#db.insertInto('inventory_mappings')
      .values({ peer: input.peer, kind: input.kind, source: input.source, target: input.target, test_target: input.testTarget ?? null, created_at: now })
      .onConflict((oc) => oc.columns(['peer', 'kind', 'source']).doUpdateSet({ target: input.target, test_target: input.testTarget ?? null }))
      .execute();
    return (await this.list({ peer: input.peer })).find((m) => m.kind === input.kind && m.source === input.source)!;
  }

  async list(filter: { peer?: string } = {}): Promise<MappingView[]> {
    let q = this.#db.selectFrom('inventory_mappings').selectAll();
    if (filter.peer !== undefined) q = q.where('peer', '=', filter.peer);
    const rows = await q.orderBy('peer').orderBy('kind').orderBy('source').execute();
    return rows.map((r) => ({ peer: r.peer, kind: r.kind as MappingKind, source: r.source, target: r.target, testTarget: r.test_target, createdAt: r.created_at }));
  }

  async delete(peer: string, kind: MappingKind, source: string): Promise<void> {
    const r = await this.#db.deleteFrom('inventory_mappings').where('peer', '=', peer).where('kind', '=', kind).where('source', '=', source).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw new MamoriError('MAPPING_NOT_FOUND', `no ${kind} mapping of ${source} for peer ${peer}; see 'mamori mapping list'`);
  }
}

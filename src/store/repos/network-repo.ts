import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { VmRepo } from './vm-repo.js';

/** A networks row: a site network VMs attach to besides the built-in ones. */
export interface NetworkRecord {
  name: string;
  /** isolated | bridge (networks/site-networks.ts) */
  kind: string;
  bridge: string;
  createdAt: string;
}

/** The networks table. */
export class NetworkRepo {
  #db: Kysely<Database>;
  #vms: VmRepo;
  constructor(db: StoreHandle) {
    this.#db = unwrapStoreHandle(db);
    this.#vms = new VmRepo(db);
  }

  async list(): Promise<NetworkRecord[]> {
    return (await this.#db.selectFrom('networks').selectAll().orderBy('name').execute()).map((r) => ({
      name: r.name,
      kind: r.kind,
      bridge: r.bridge,
      createdAt: r.created_at,
    }));
  }

  async exists(name: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('networks').select('name').where('name', '=', name).executeTakeFirst()) !== undefined
    );
  }

  /** Isolated networks: their bridges are mamori's to make again after a host reboot. */
  async isolated(): Promise<NetworkRecord[]> {
    return (await this.list()).filter((n) => n.kind === 'isolated');
  }

  async insert(n: NetworkRecord): Promise<void> {
    await this.#db
      .insertInto('networks')
      .values({ name: n.name, kind: n.kind, bridge: n.bridge, created_at: n.createdAt })
      .execute();
  }

  async delete(name: string): Promise<void> {
    await this.#db.deleteFrom('networks').where('name', '=', name).execute();
  }

  /** Names of the VMs with a NIC on this network. */
  async vmsOn(name: string): Promise<string[]> {
    return (await this.#vms.list())
      .filter((v) => v.definition.nics.some((nic) => nic.network === name))
      .map((v) => v.name);
  }
}

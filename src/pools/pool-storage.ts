import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { SitePaths } from '../core/site-paths.js';
import type { VmDefinition } from '../vms/vm-definition.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import { newShortId, newUuid } from '../core/ids.js';
import { syncFilesystemOf } from '../core/durable-sync.js';
import { makeReplica, removeReplica, type HeldLayers, type ReplicaLayer } from './pool-replica.js';
import { buildDesktop, desktopFiles, removeDesktopFiles, type DesktopFiles } from './desktop-clone.js';
import { runWithConcurrency } from './bounded-concurrency.js';
import type { PoolSpec } from './pool-spec.js';
import { freeAddresses, freeStrayAddresses, reserveAddresses } from './pool-addresses.js';

/**
 * A pool's replicas and desktops as files and rows together: what is made, where, and in
 * which order so that a row never names a file that is not there. The pool service decides
 * when; this decides how.
 */
export class PoolStorage {
  #db: Kysely<Database>;
  #paths: SitePaths;

  constructor(deps: { db: Kysely<Database>; paths: SitePaths }) {
    this.#db = deps.db;
    this.#paths = deps.paths;
  }

  /**
   * The replica of the spec's snapshot in each of its storage pools, made where missing
   * (`held`: the master's layers read again under its lock, for linking them: pool-replica.ts).
   */
  async ensureReplicas(name: string, spec: PoolSpec, layers: ReplicaLayer[], held?: HeldLayers): Promise<Map<string, { id: string; files: string[] }>> {
    const replicas = new Map<string, { id: string; files: string[] }>();
    for (const s of spec.storage) {
      const have = await this.#db.selectFrom('pool_replicas').selectAll().where('pool', '=', name).where('storage', '=', s).where('snapshot', '=', spec.snapshot).executeTakeFirst();
      if (have) {
        replicas.set(s, { id: have.id, files: JSON.parse(have.files) as string[] });
        continue;
      }
      await this.#removeStrayReplicaFolders(name, s);
      const id = newShortId('replica');
      const made = await makeReplica(join(this.#paths.pool(s), 'replicas', name, id), layers, held ? { held } : {});
      await this.#db.insertInto('pool_replicas').values({ id, pool: name, storage: s, snapshot: spec.snapshot, files: JSON.stringify(made.files), size_bytes: made.sizeBytes, created_at: new Date().toISOString() }).execute();
      replicas.set(s, { id, files: made.files });
    }
    return replicas;
  }

  /** Replica folders no row names: what a copy cut by a server stop left (rows are written after the copy is whole). */
  async #removeStrayReplicaFolders(name: string, storage: string): Promise<void> {
    const dir = join(this.#paths.pool(storage), 'replicas', name);
    const known = new Set((await this.#db.selectFrom('pool_replicas').select('id').where('pool', '=', name).where('storage', '=', storage).execute()).map((r) => r.id));
    for (const id of await readdir(dir).catch(() => [] as string[])) {
      if (!known.has(id)) await rm(join(dir, id), { recursive: true, force: true });
    }
  }

  /** A replica goes only when no desktop uses it and it is not the pool's current one. */
  async removeUnusedReplicas(name: string, spec: PoolSpec): Promise<number> {
    let removed = 0;
    for (const rep of await this.#db.selectFrom('pool_replicas').selectAll().where('pool', '=', name).execute()) {
      if (rep.snapshot === spec.snapshot && spec.storage.includes(rep.storage)) continue;
      const user = await this.#db.selectFrom('pool_desktops').select('vm_id').where('replica_id', '=', rep.id).executeTakeFirst();
      if (user) continue;
      await this.#db.deleteFrom('pool_replicas').where('id', '=', rep.id).execute();
      await removeReplica(JSON.parse(rep.files) as string[]);
      removed++;
    }
    return removed;
  }

  /**
   * One batch of new desktops: every desktop's files, then one syncfs per storage pool, then
   * the batch's rows in one transaction, so a row never names a file a power cut could lose.
   * A failure removes the batch's folders.
   */
  async makeDesktops(pool: string, spec: PoolSpec, master: VmDefinition, sizes: number[], batch: { n: number; name: string; storage: string }[],
    replicas: Map<string, { id: string; files: string[] }>): Promise<void> {
    const built: { n: number; vmId: string; replicaId: string; files: DesktopFiles; made: Awaited<ReturnType<typeof buildDesktop>> }[] = [];
    const folders: DesktopFiles[] = [];
    // Each desktop's id first: its static address is reserved under it before its seed is written.
    const ids = new Map(batch.map((it) => [it.n, newUuid()]));
    await freeStrayAddresses(this.#db, pool);
    const addresses = await reserveAddresses(this.#db, pool, spec.network, [...ids.values()]);
    try {
      await runWithConcurrency(batch, spec.concurrency, async (it) => {
        const replica = replicas.get(it.storage)!;
        const files = desktopFiles(this.#paths.pool(it.storage), pool, it.name, spec, replica.files.length);
        folders.push(files);
        // A folder without a row is what a cut provisioning left: start it over.
        await removeDesktopFiles(files);
        const vmId = ids.get(it.n)!;
        const address = addresses.get(vmId);
        const made = await buildDesktop({ files, vmId, name: it.name, pool, storage: it.storage, spec, master, replica: replica.files, replicaSizes: sizes, durable: false, ...(address ? { address } : {}) });
        built.push({ n: it.n, vmId, replicaId: replica.id, files, made });
      });
      for (const s of new Set(batch.map((it) => it.storage))) await syncFilesystemOf(this.#paths.pool(s));
      const now = new Date().toISOString();
      await this.#db.transaction().execute(async (tx) => {
        for (const b of built) {
          await tx.insertInto('vms').values({ id: b.vmId, name: b.made.def.name, definition: JSON.stringify(b.made.def), state: 'stopped', state_reason: null, pid: null, last_heartbeat_at: null, created_at: now, updated_at: now }).execute();
          for (const d of b.made.disks) await DiskRepo.insert(tx, d);
          await tx.insertInto('pool_desktops').values({ vm_id: b.vmId, pool, number: b.n, replica_id: b.replicaId, state: 'provisioned', message: null, pending: null, assigned_user: null, session_user: null, session_since: null, created_at: now, updated_at: now }).execute();
        }
      });
    } catch (e) {
      for (const f of folders) await removeDesktopFiles(f);
      await freeAddresses(this.#db, [...ids.values()]);
      throw e;
    }
  }
}

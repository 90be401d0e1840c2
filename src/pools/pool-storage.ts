import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SitePaths } from '../core/site-paths.js';
import type { VmDefinition } from '../vms/vm-definition.js';
import type { DesktopPoolRepo } from '../store/repos/desktop-pool-repo.js';
import type { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import type { PoolSpec } from '../store/repos/pool-records.js';
import { newShortId, newUuid } from '../core/ids.js';
import { syncFilesystemOf } from '../core/durable-sync.js';
import { makeReplica, removeReplica, type HeldLayers, type ReplicaLayer } from './pool-replica.js';
import { buildDesktop, desktopFiles, removeDesktopFiles, type DesktopFiles } from './desktop-clone.js';
import { runWithConcurrency } from './bounded-concurrency.js';
import { reserveAddresses } from './pool-addresses.js';

/**
 * A pool's replicas and desktops as files and rows together: what is made, where, and in
 * which order so that a row never names a file that is not there. The pool service decides
 * when; this decides how.
 */
export class PoolStorage {
  #pools: DesktopPoolRepo;
  #desktops: PoolDesktopRepo;
  #paths: SitePaths;

  constructor(deps: { pools: DesktopPoolRepo; desktops: PoolDesktopRepo; paths: SitePaths }) {
    this.#pools = deps.pools;
    this.#desktops = deps.desktops;
    this.#paths = deps.paths;
  }

  /**
   * The replica of the spec's snapshot in each of its storage pools, made where missing
   * (`held`: the master's layers read again under its lock, for linking them: pool-replica.ts).
   */
  async ensureReplicas(
    name: string,
    spec: PoolSpec,
    layers: ReplicaLayer[],
    held?: HeldLayers,
  ): Promise<Map<string, { id: string; files: string[] }>> {
    const replicas = new Map<string, { id: string; files: string[] }>();
    for (const s of spec.storage) {
      const have = await this.#pools.replicaFor(name, s, spec.snapshot);
      if (have) {
        replicas.set(s, { id: have.id, files: have.files });
        continue;
      }
      await this.#removeStrayReplicaFolders(name, s);
      const id = newShortId('replica');
      const made = await makeReplica(join(this.#paths.pool(s), 'replicas', name, id), layers, held ? { held } : {});
      await this.#pools.insertReplica({
        id,
        pool: name,
        storage: s,
        snapshot: spec.snapshot,
        files: made.files,
        sizeBytes: made.sizeBytes,
        createdAt: new Date().toISOString(),
      });
      replicas.set(s, { id, files: made.files });
    }
    return replicas;
  }

  /** Replica folders no row names: what a copy cut by a server stop left (rows are written after the copy is whole). */
  async #removeStrayReplicaFolders(name: string, storage: string): Promise<void> {
    const dir = join(this.#paths.pool(storage), 'replicas', name);
    const known = new Set(await this.#pools.replicaIdsIn(name, storage));
    for (const id of await readdir(dir).catch(() => [] as string[])) {
      if (!known.has(id)) await rm(join(dir, id), { recursive: true, force: true });
    }
  }

  /** A replica goes only when no desktop uses it and it is not the pool's current one. */
  async removeUnusedReplicas(name: string, spec: PoolSpec): Promise<number> {
    let removed = 0;
    for (const rep of await this.#pools.replicasOf(name)) {
      if (rep.snapshot === spec.snapshot && spec.storage.includes(rep.storage)) continue;
      if (await this.#pools.replicaInUse(rep.id)) continue;
      await this.#pools.deleteReplica(rep.id);
      await removeReplica(rep.files);
      removed++;
    }
    return removed;
  }

  /**
   * One batch of new desktops: every desktop's files, then one syncfs per storage pool, then
   * the batch's rows in one transaction, so a row never names a file a power cut could lose.
   * A failure removes the batch's folders.
   */
  async makeDesktops(
    pool: string,
    spec: PoolSpec,
    master: VmDefinition,
    sizes: number[],
    batch: { n: number; name: string; storage: string }[],
    replicas: Map<string, { id: string; files: string[] }>,
  ): Promise<void> {
    const built: {
      n: number;
      vmId: string;
      replicaId: string;
      files: DesktopFiles;
      made: Awaited<ReturnType<typeof buildDesktop>>;
    }[] = [];
    const folders: DesktopFiles[] = [];
    // Each desktop's id first: its static address is reserved under it before its seed is written.
    const ids = new Map(batch.map((it) => [it.n, newUuid()]));
    await this.#pools.freeStrayAddresses(pool);
    const addresses = await reserveAddresses(this.#pools, pool, spec.network, [...ids.values()]);
    try {
      await runWithConcurrency(batch, spec.concurrency, async (it) => {
        const replica = replicas.get(it.storage)!;
        const files = desktopFiles(this.#paths.pool(it.storage), pool, it.name, spec, replica.files.length);
        folders.push(files);
        // A folder without a row is what a cut provisioning left: start it over.
        await removeDesktopFiles(files);
        const vmId = ids.get(it.n)!;
        const address = addresses.get(vmId);
        const made = await buildDesktop({
          files,
          vmId,
          name: it.name,
          pool,
          storage: it.storage,
          spec,
          master,
          replica: replica.files,
          replicaSizes: sizes,
          durable: false,
          ...(address ? { address } : {}),
        });
        built.push({ n: it.n, vmId, replicaId: replica.id, files, made });
      });
      for (const s of new Set(batch.map((it) => it.storage))) await syncFilesystemOf(this.#paths.pool(s));
      // One transaction: every VM row, disk row and desktop row of the batch, or none.
      await this.#desktops.add(
        pool,
        built.map((b) => ({
          vm: { id: b.vmId, definition: b.made.def },
          disks: b.made.disks,
          number: b.n,
          replicaId: b.replicaId,
        })),
        new Date().toISOString(),
      );
    } catch (e) {
      for (const f of folders) await removeDesktopFiles(f);
      await this.#pools.freeAddresses([...ids.values()]);
      throw e;
    }
  }
}

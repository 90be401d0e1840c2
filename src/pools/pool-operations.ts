import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmService } from '../vms/vm-service.js';
import type { DiskService } from '../disks/disk-service.js';
import type { JobJournal } from '../jobs/job-journal.js';
import type { SitePaths } from '../core/site-paths.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import type { DiskRepo } from '../store/repos/disk-repo.js';
import type { DesktopPoolRepo } from '../store/repos/desktop-pool-repo.js';
import type { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import type { PoolOperation, PoolSpec } from '../store/repos/pool-records.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import { MamoriError } from '../core/mamori-error.js';
import { faultPoint } from '../core/fault-points.js';
import { desktopNames } from './pool-spec.js';
import { removeReplica, snapshotLayer, type HeldLayers } from './pool-replica.js';
import { desktopFiles, writeDisposableDisk, writeOsDisks } from './desktop-clone.js';
import { PoolStorage } from './pool-storage.js';
import { moveDesktops, removeStrayDesktopFolders } from './desktop-rebalance.js';
import { runWithConcurrency } from './bounded-concurrency.js';
import { isInUse } from './pool-spares.js';

/**
 * The work of each pool operation, on files and rows: the pool service validates what is
 * asked and records it; this does it. Every step is idempotent and reads what is left to do
 * from the rows (missing desktops, desktops marked pending, desktops not where their share
 * is), so the same call after a cut finishes the operation instead of starting it over.
 */
export class PoolOperations {
  #pools: DesktopPoolRepo;
  #desktops: PoolDesktopRepo;
  #vms: VmService;
  #disks: DiskService;
  #jobs: JobJournal;
  #paths: SitePaths;
  #storage: PoolStorage;

  constructor(deps: {
    pools: DesktopPoolRepo;
    desktops: PoolDesktopRepo;
    vms: VmService;
    disks: DiskService;
    jobs: JobJournal;
    paths: SitePaths;
  }) {
    this.#pools = deps.pools;
    this.#desktops = deps.desktops;
    this.#vms = deps.vms;
    this.#disks = deps.disks;
    this.#jobs = deps.jobs;
    this.#paths = deps.paths;
    this.#storage = new PoolStorage(deps);
  }

  /**
   * A desktop ready to have its disks changed: stopped already; powered off when not in use (a
   * spare: no user assigned, no session), or when in use and `force`. A desktop in use
   * without `force` is added to `skipped` (null back), as is one gone.
   */
  async #stopped(vmId: string, force: boolean, skipped: string[]): Promise<VmRow | null> {
    const vm = await this.#vms.repo.findById(vmId);
    if (!vm) return null;
    if (['stopped', 'crashed'].includes(vm.state)) return vm;
    const row = await this.#desktops.find(vmId);
    const inUse = row ? isInUse(row) : false;
    if (inUse && !force) {
      skipped.push(vm.name);
      return null;
    }
    // A spare's disks are what the replica and customization made: a clean shutdown keeps
    // them whole; a forced run takes a user's desktop away at once, as it did before.
    if (inUse) await this.#vms.kill(vm.name);
    else await this.#vms.stop(vm.name, {});
    return vm;
  }

  /**
   * The desktops `kind` still has to do (marked pending when it started): new OS overlays (on
   * `onto`'s replica, or the desktop's own) and a new disposable disk; identity and
   * persistent disks stay. Each desktop's mark goes with its rows, so a cut run resumes
   * with the desktops it had not done, and one a user started since is not touched again.
   */
  async #rebuild(
    name: string,
    spec: PoolSpec,
    kind: PoolOperation['kind'],
    o: { force: boolean; jobId: string; onto?: (storage: string) => { id: string; files: string[] } },
  ): Promise<{ rebuilt: string[]; skipped: string[] }> {
    const targets = await this.#desktops.pendingFor(name, kind);
    const rebuilt: string[] = [];
    const skipped: string[] = [];
    await runWithConcurrency(targets, spec.maintenanceConcurrency, async (t) => {
      const vm = await this.#stopped(t.vmId, o.force, skipped);
      if (!vm) {
        await this.#desktops.clearPending(t.vmId);
        return;
      }
      const current = await this.#pools.replica(t.replicaId);
      if (!current)
        throw new MamoriError(
          'INTERNAL',
          `desktop ${t.vmId} of pool ${name} sits on replica ${t.replicaId}, which has no row`,
        );
      const replica = o.onto ? o.onto(current.storage) : { id: current.id, files: current.files };
      const files = desktopFiles(this.#paths.pool(current.storage), name, vm.name, spec, replica.files.length);
      await writeOsDisks(files, replica.files);
      if (spec.disposableDiskBytes !== null) await writeDisposableDisk(files, spec.disposableDiskBytes);
      // The serial log tells the desktop's customization state: a rebuilt desktop starts over.
      await rm(this.#paths.vmRuntime(vm.id).serialLog, { force: true });
      await this.#desktops.rebuilt(vm.id, replica.id, new Date().toISOString());
      faultPoint('pool-desktop-done');
      rebuilt.push(vm.name);
      await this.#jobs.progress(o.jobId, (rebuilt.length + skipped.length) / targets.length);
    });
    return { rebuilt, skipped };
  }

  async #deleteDesktop(vmId: string): Promise<void> {
    const vm = await this.#vms.repo.findById(vmId);
    const row = await this.#desktops.find(vmId);
    if (vm) await this.#vms.delete(vm.name, { force: true });
    await this.#desktops.delete(vmId);
    // After the row: a cut here leaves a stray reservation, which the next provisioning frees.
    await this.#pools.freeAddresses([vmId]);
    if (vm && row) {
      const rep = await this.#pools.replica(row.replicaId);
      await rm(join(this.#paths.pool(rep?.storage ?? 'default'), 'desktops', row.pool, vm.name), {
        recursive: true,
        force: true,
      });
    }
  }

  async masterDisks(master: VmRow): Promise<Awaited<ReturnType<DiskRepo['byIds']>>> {
    const ids = replicatedDiskIds(master.definition);
    const disks = await this.#disks.repo.byIds(ids);
    const ordered = ids.map((id) => disks.find((d) => d.id === id)!).filter(Boolean);
    if (ordered.length === 0) throw new MamoriError('INVALID_INPUT', `VM ${master.name} has no disk to clone`);
    return ordered;
  }

  /** The master's layers as they were at `snapshot`, one per disk; a snapshot the master does not have is refused. */
  async snapshotLayers(master: VmRow, snapshot: string): Promise<{ path: string; format: string }[]> {
    if (!(await this.#pools.snapshotExists(master.id, snapshot))) {
      throw new MamoriError(
        'SNAPSHOT_NOT_FOUND',
        `VM ${master.name} has no snapshot ${snapshot}; take one with: mamori vm snapshot ${master.name} ${snapshot}`,
      );
    }
    return (await this.masterDisks(master)).map((d) => snapshotLayer(d, snapshot));
  }

  /** The master's layers for `snapshot` read again while the master holds still (pool-replica.ts links them). */
  #held(spec: PoolSpec, snapshot: string): HeldLayers {
    return (fn) =>
      this.#vms.whileHeld(spec.master.vmId, async (vm) => {
        const has = vm && (await this.#pools.snapshotExists(vm.id, snapshot));
        return fn({
          layers: vm && has ? (await this.masterDisks(vm)).map((d) => snapshotLayer(d, snapshot)) : null,
          masterOff: vm !== undefined && ['stopped', 'crashed'].includes(vm.state),
        });
      });
  }

  /** The work of each operation; each step is idempotent, so running it again after a cut finishes it. */
  work(name: string, op: PoolOperation): { steps: string[]; run: (jobId: string) => Promise<Record<string, unknown>> } {
    switch (op.kind) {
      case 'provision':
        return { steps: ['replicas', 'desktops'], run: (jobId) => this.#provision(name, jobId) };
      case 'refresh':
        return {
          steps: ['refresh'],
          run: async (jobId) => {
            const spec = await this.#spec(name);
            // Journalled like every other step: the job says where it was, and its fault point is passed.
            const r = await this.#jobs.step(jobId, 'refresh', () =>
              this.#rebuild(name, spec, 'refresh', { force: op.force, jobId }),
            );
            return { refreshed: r.rebuilt.length, skipped: r.skipped };
          },
        };
      case 'recompose':
        return {
          steps: ['replicas', 'desktops', 'cleanup'],
          run: async (jobId) => {
            const spec = await this.#spec(name);
            const layers = await this.snapshotLayers(await this.master(spec), op.snapshot);
            const next = { ...spec, snapshot: op.snapshot };
            const replicas = await this.#jobs.step(jobId, 'replicas', () =>
              this.#storage.ensureReplicas(name, next, layers, this.#held(spec, op.snapshot)),
            );
            const r = await this.#jobs.step(jobId, 'desktops', () =>
              this.#rebuild(name, next, 'recompose', {
                force: op.force,
                jobId,
                onto: (storage) => replicas.get(storage)!,
              }),
            );
            await this.#setSpec(name, next);
            const removed = await this.#jobs.step(jobId, 'cleanup', () =>
              this.#storage.removeUnusedReplicas(name, next),
            );
            return {
              snapshot: op.snapshot,
              recomposed: r.rebuilt.length,
              skipped: r.skipped,
              replicasRemoved: removed,
            };
          },
        };
      case 'rebalance':
        return {
          steps: ['replicas', 'desktops', 'cleanup'],
          run: async (jobId) => {
            const spec = await this.#spec(name);
            const used = (await this.#pools.replicasOf(name)).map((r) => r.storage);
            const next: PoolSpec = { ...spec, storage: op.storage };
            const layers = await this.snapshotLayers(await this.master(spec), spec.snapshot);
            const replicas = await this.#jobs.step(jobId, 'replicas', () =>
              this.#storage.ensureReplicas(name, next, layers, this.#held(spec, spec.snapshot)),
            );
            await this.#setSpec(name, next);
            const moves = await this.#jobs.step(jobId, 'desktops', () =>
              moveDesktops(
                {
                  desktops: this.#desktops,
                  paths: this.#paths,
                  stopped: (vmId, skipped) => this.#stopped(vmId, op.force, skipped),
                  progress: (f) => this.#jobs.progress(jobId, f),
                },
                name,
                next,
                replicas,
              ),
            );
            const removed = await this.#jobs.step(jobId, 'cleanup', async () => {
              await removeStrayDesktopFolders(this.#desktops, this.#paths, name, [...used, ...next.storage]);
              return this.#storage.removeUnusedReplicas(name, next);
            });
            return { ...moves, replicasRemoved: removed };
          },
        };
      case 'resize':
        return {
          steps: ['desktops'],
          run: async (jobId) => {
            const spec = await this.#spec(name);
            const going = await this.#desktops.vmIdsAbove(name, op.size);
            const skipped: string[] = [];
            let removed = 0;
            await this.#jobs.step(jobId, 'desktops', () =>
              runWithConcurrency(going, spec.maintenanceConcurrency, async (d) => {
                if (!(await this.#stopped(d, op.force, skipped))) return;
                await this.#deleteDesktop(d);
                faultPoint('pool-desktop-done');
                await this.#jobs.progress(jobId, ++removed / going.length);
              }),
            );
            return { size: op.size, removed, skipped };
          },
        };
      case 'delete':
        return {
          steps: ['desktops', 'replicas'],
          run: async (jobId) => {
            const spec = await this.#spec(name);
            const rows = await this.#desktops.listOf(name);
            let done = 0;
            await this.#jobs.step(jobId, 'desktops', () =>
              runWithConcurrency(rows, spec.maintenanceConcurrency, async (r) => {
                await this.#deleteDesktop(r.vmId);
                await this.#jobs.progress(jobId, (++done / Math.max(rows.length, 1)) * 0.9);
              }),
            );
            await this.#jobs.step(jobId, 'replicas', async () => {
              for (const rep of await this.#pools.replicasOf(name)) {
                await removeReplica(rep.files);
                await rm(join(this.#paths.pool(rep.storage), 'desktops', name), { recursive: true, force: true });
                await rm(join(this.#paths.pool(rep.storage), 'replicas', name), { recursive: true, force: true });
              }
              await this.#pools.deletePool(name);
            });
            return { deleted: name, desktops: rows.length };
          },
        };
    }
  }

  /** Provisioning: replicas where missing, then desktops 1..size where missing. */
  async #provision(name: string, jobId: string): Promise<Record<string, unknown>> {
    const spec = await this.#spec(name);
    const master = await this.master(spec);
    const masterDisks = await this.masterDisks(master);
    const layers = masterDisks.map((d) => snapshotLayer(d, spec.snapshot));
    const replicas = await this.#jobs.step(jobId, 'replicas', () =>
      this.#storage.ensureReplicas(name, spec, layers, this.#held(spec, spec.snapshot)),
    );
    const existing = new Set(await this.#desktops.numbersOf(name));
    const missing = Array.from({ length: spec.size }, (_, i) => i + 1).filter((n) => !existing.has(n));
    const names = desktopNames(spec.namePattern, missing, spec.guestOs);
    let done = 0;
    // Spread over the storage pools in turn (rebalance evens them out by free space later).
    const items = missing.map((n, i) => ({
      n,
      name: names[i]!,
      storage: spec.storage[(n - 1) % spec.storage.length]!,
    }));
    await this.#jobs.step(jobId, 'desktops', async () => {
      // In batches: every desktop's files, then one syncfs per storage pool, then the batch's
      // rows in one transaction. A row never names a file a power cut could lose.
      const batchSize = spec.concurrency * 4;
      for (let b = 0; b < items.length; b += batchSize) {
        const batch = items.slice(b, b + batchSize);
        await this.#storage.makeDesktops(
          name,
          spec,
          master.definition,
          masterDisks.map((d) => d.sizeBytes),
          batch,
          replicas,
        );
        done += batch.length;
        await this.#jobs.progress(jobId, done / missing.length);
      }
    });
    return { pool: name, made: missing.length, desktops: spec.size };
  }

  async #spec(name: string): Promise<PoolSpec> {
    const p = await this.#pools.find(name);
    if (!p) throw new MamoriError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${name} is gone`);
    return p.spec;
  }

  async #setSpec(name: string, spec: PoolSpec): Promise<void> {
    await this.#pools.setSpec(name, spec, new Date().toISOString());
  }

  async master(spec: PoolSpec): Promise<VmRow> {
    const master = await this.#vms.repo.findById(spec.master.vmId);
    if (!master) throw new MamoriError('VM_NOT_FOUND', `the master VM ${spec.master.name} is gone`);
    return master;
  }
}

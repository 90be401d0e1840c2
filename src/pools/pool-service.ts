import { rename, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { VmService } from '../vms/vm-service.js';
import type { DiskService } from '../disks/disk-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { POOL_LIMITS, desktopNames, intOption, poolSpecOf, type PoolCreateInput, type PoolSpec } from './pool-spec.js';
import { measureReplica, removeReplica, snapshotLayer } from './pool-replica.js';
import { desktopFiles, writeDisposableDisk, writeOsDisks } from './desktop-clone.js';
import { listPools, poolView, type PoolSummary, type PoolView } from './pool-views.js';
import { assertRoom, existingParent, shares } from './storage-space.js';
import { PoolStorage } from './pool-storage.js';
import { moveDesktopFiles } from './desktop-move.js';
import { runWithConcurrency } from './bounded-concurrency.js';

export const PROVISION_JOB = 'pool-provision';
export const REFRESH_JOB = 'pool-refresh';
export const DELETE_JOB = 'pool-delete';
export const RECOMPOSE_JOB = 'pool-recompose';
export const RESIZE_JOB = 'pool-resize';
export const REBALANCE_JOB = 'pool-rebalance';
export type { PoolView, DesktopView } from './pool-views.js';

/**
 * Desktop pools of linked clones (View Composer): a replica of the master's snapshot per
 * storage pool, and desktops whose OS disks are overlays on it, each with an identity disk
 * that customizes it. Operations run as jobs, one at a time per pool; provisioning is
 * idempotent (it makes what is missing), so a server stopped mid-way resumes at its next start.
 */
export class PoolService {
  #db: Kysely<Database>;
  #vms: VmService;
  #disks: DiskService;
  #jobs: JobJournal;
  #paths: SitePaths;
  #log: Logger;
  #lock = new KeyedLock();
  #storage: PoolStorage;
  #busy = new Set<string>();

  constructor(deps: { db: Kysely<Database>; vms: VmService; disks: DiskService; jobs: JobJournal; paths: SitePaths; log: Logger }) {
    this.#db = deps.db;
    this.#vms = deps.vms;
    this.#disks = deps.disks;
    this.#jobs = deps.jobs;
    this.#paths = deps.paths;
    this.#log = deps.log;
    this.#storage = new PoolStorage({ db: deps.db, paths: deps.paths });
    this.#vms.addDeleteGuard(async (vm) => {
      const pools = (await this.#db.selectFrom('desktop_pools').select(['name', 'spec']).execute()).filter((p) => (JSON.parse(p.spec) as PoolSpec).master.vmId === vm.id);
      if (pools.length > 0) {
        throw new MamoriError('MASTER_IN_USE', `VM ${vm.name} is the master of desktop pool${pools.length > 1 ? 's' : ''} ${pools.map((p) => p.name).join(', ')}: delete the pool${pools.length > 1 ? 's' : ''} first`, { details: { pools: pools.map((p) => p.name) } });
      }
    });
    this.#vms.addSnapshotDeleteGuard(async (vm, snapshot) => {
      const pools = (await this.#db.selectFrom('desktop_pools').select(['name', 'spec']).execute())
        .filter((p) => { const sp = JSON.parse(p.spec) as PoolSpec; return sp.master.vmId === vm.id && sp.snapshot === snapshot; });
      if (pools.length > 0) {
        throw new MamoriError('MASTER_IN_USE', `snapshot ${snapshot} of ${vm.name} backs desktop pool ${pools.map((p) => p.name).join(', ')}: recompose the pool onto another snapshot, or delete it, first`, { details: { pools: pools.map((p) => p.name) } });
      }
    });
    // View Composer's disposable disk: swap and temp files do not outlive a power-off.
    this.#vms.onPowerOff(async (vmId) => {
      const row = await this.#db.selectFrom('pool_desktops').innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
        .innerJoin('desktop_pools', 'desktop_pools.name', 'pool_desktops.pool')
        .select(['pool_desktops.pool', 'pool_replicas.storage', 'pool_replicas.files', 'desktop_pools.spec']).where('pool_desktops.vm_id', '=', vmId).executeTakeFirst();
      if (!row) return;
      const spec = JSON.parse(row.spec) as PoolSpec;
      const vm = await this.#vms.repo.findById(vmId);
      if (spec.disposableDiskBytes === null || !vm || !['stopped', 'crashed'].includes(vm.state)) return;
      await writeDisposableDisk(desktopFiles(this.#paths.pool(row.storage), row.pool, vm.name, spec, (JSON.parse(row.files) as string[]).length), spec.disposableDiskBytes);
    });
    for (const kind of [PROVISION_JOB, REFRESH_JOB, DELETE_JOB, RECOMPOSE_JOB, RESIZE_JOB, REBALANCE_JOB]) {
      // Provisioning and deletion resume by themselves; the others are idempotent and are run again by hand.
      const resumes = kind === PROVISION_JOB || kind === DELETE_JOB;
      this.#jobs.registerRecovery(kind, async (job) => {
        const message = resumes ? `${kind} was cut by a server stop; it resumes at start` : `${kind} was cut by a server stop; run it again: it carries on where it stopped`;
        if (job.target) await this.#db.updateTable('desktop_pools').set({ state: resumes ? (kind === DELETE_JOB ? 'deleting' : 'interrupted') : 'error', message, updated_at: new Date().toISOString() }).where('name', '=', job.target).execute();
        return `the site server stopped during ${kind} of ${job.target}: ${message}`;
      });
    }
  }

  /** At server start: pools an operation left half done are taken up again (the operations are idempotent). */
  async resumeInterrupted(): Promise<void> {
    for (const p of await this.#db.selectFrom('desktop_pools').select(['name', 'state']).where('state', 'in', ['interrupted', 'provisioning', 'deleting']).execute()) {
      this.#log.info({ pool: p.name }, 'resuming an interrupted desktop pool operation');
      await (p.state === 'deleting' ? this.delete(p.name) : this.#startProvision(p.name)).catch((e: unknown) => this.#log.error({ pool: p.name, err: e }, 'resuming the pool failed'));
    }
  }

  async create(input: PoolCreateInput): Promise<Job> {
    assertValidName('desktop pool', input.name);
    return this.#lock.run('create', async () => {
      if (await this.#db.selectFrom('desktop_pools').select('name').where('name', '=', input.name).executeTakeFirst()) {
        throw new MamoriError('DESKTOP_POOL_EXISTS', `a desktop pool named ${input.name} exists; pick another name`);
      }
      const master = await this.#vms.get(input.master);
      const spec = poolSpecOf(input, master);
      const snap = await this.#db.selectFrom('snapshots').select('name').where('vm_id', '=', master.id).where('name', '=', spec.snapshot).executeTakeFirst();
      if (!snap) throw new MamoriError('SNAPSHOT_NOT_FOUND', `VM ${master.name} has no snapshot ${spec.snapshot}; take one with: mamori vm snapshot ${master.name} ${spec.snapshot}`);
      const names = desktopNames(spec.namePattern, Array.from({ length: spec.size }, (_, i) => i + 1));
      for (const n of names) {
        if (await this.#vms.repo.findByName(n)) throw new MamoriError('VM_EXISTS', `the name pattern gives ${n}, which an existing VM has; use another pattern`, { details: { name: n } });
      }
      const layers = (await this.#masterDisks(master)).map((d) => snapshotLayer(d, spec.snapshot));
      await assertRoom((st) => this.#paths.pool(st), spec, await measureReplica(layers), spec.size);
      const now = new Date().toISOString();
      await this.#db.insertInto('desktop_pools').values({ name: input.name, spec: JSON.stringify(spec), state: 'provisioning', message: null, created_at: now, updated_at: now }).execute();
      return this.#startProvision(input.name);
    });
  }

  async list(): Promise<PoolSummary[]> {
    return listPools(this.#db);
  }

  async show(name: string): Promise<PoolView> {
    return poolView(this.#db, this.#vms.repo, this.#paths, await this.#pool(name));
  }

  /**
   * Discards each desktop's changes: new OS overlays on the same replica and a new
   * disposable disk; the identity and persistent disks stay. Running desktops are skipped
   * unless `force` (then powered off first).
   */
  async refresh(name: string, opts: { desktops?: string[]; force?: boolean } = {}): Promise<Job> {
    const pool = await this.#pool(name);
    const spec = JSON.parse(pool.spec) as PoolSpec;
    const targets = await this.#desktopsOf(name, opts.desktops);
    return this.#runJob(name, REFRESH_JOB, ['refresh'], async (jobId) => {
      const r = await this.#rebuild(name, spec, targets, { force: opts.force === true, jobId });
      return { refreshed: r.rebuilt.length, skipped: r.skipped };
    });
  }

  /**
   * Moves the pool to another snapshot of its master (View Composer's recompose): new
   * replicas, then every desktop rebuilt on them in rolling batches of the maintenance
   * concurrency, identity and persistent disks kept. Desktops in use are skipped unless
   * `force`; they stay on the old replica, which goes once no desktop uses it.
   */
  async recompose(name: string, snapshot: string, opts: { force?: boolean } = {}): Promise<Job> {
    const pool = await this.#pool(name);
    const spec = JSON.parse(pool.spec) as PoolSpec;
    if (snapshot === spec.snapshot) {
      // Allowed only to finish a recompose that skipped desktops in use: some still sit on an older replica.
      const behind = await this.#db.selectFrom('pool_desktops').innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
        .select('pool_desktops.vm_id').where('pool_desktops.pool', '=', name).where('pool_replicas.snapshot', '!=', snapshot).executeTakeFirst();
      if (!behind) throw new MamoriError('INVALID_INPUT', `desktop pool ${name} already runs on snapshot ${snapshot}: take a new snapshot of ${spec.master.name} and recompose onto that`);
    }
    const master = await this.#vms.repo.findById(spec.master.vmId);
    if (!master) throw new MamoriError('VM_NOT_FOUND', `the master VM ${spec.master.name} is gone`);
    if (!(await this.#db.selectFrom('snapshots').select('name').where('vm_id', '=', master.id).where('name', '=', snapshot).executeTakeFirst())) {
      throw new MamoriError('SNAPSHOT_NOT_FOUND', `VM ${master.name} has no snapshot ${snapshot}; take one with: mamori vm snapshot ${master.name} ${snapshot}`);
    }
    const layers = (await this.#masterDisks(master)).map((d) => snapshotLayer(d, snapshot));
    await assertRoom((st) => this.#paths.pool(st), { ...spec, persistentDiskBytes: 0, disposableDiskBytes: 0 }, await measureReplica(layers), 0);
    const targets = await this.#desktopsOf(name, undefined);
    return this.#runJob(name, RECOMPOSE_JOB, ['replicas', 'desktops', 'cleanup'], async (jobId) => {
      const next = { ...spec, snapshot };
      const replicas = await this.#jobs.step(jobId, 'replicas', () => this.#storage.ensureReplicas(name, next, layers));
      const r = await this.#jobs.step(jobId, 'desktops', () => this.#rebuild(name, next, targets, { force: opts.force === true, jobId, onto: (storage) => replicas.get(storage)! }));
      await this.#db.updateTable('desktop_pools').set({ spec: JSON.stringify(next), updated_at: new Date().toISOString() }).where('name', '=', name).execute();
      const removed = await this.#jobs.step(jobId, 'cleanup', () => this.#storage.removeUnusedReplicas(name, next));
      return { snapshot, recomposed: r.rebuilt.length, skipped: r.skipped, replicasRemoved: removed };
    });
  }

  /** Grows the pool (new desktops, customized as the first) or shrinks it from the highest numbers. */
  async resize(name: string, size: number, opts: { force?: boolean } = {}): Promise<Job> {
    const pool = await this.#pool(name);
    const spec = JSON.parse(pool.spec) as PoolSpec;
    const newSize = intOption('size', size, spec.size, POOL_LIMITS.size);
    if (newSize > spec.size) {
      const names = desktopNames(spec.namePattern, Array.from({ length: newSize - spec.size }, (_, i) => spec.size + i + 1));
      for (const n of names) {
        if (await this.#vms.repo.findByName(n)) throw new MamoriError('VM_EXISTS', `growing the pool makes ${n}, which an existing VM has`, { details: { name: n } });
      }
      await assertRoom((st) => this.#paths.pool(st), spec, 0, newSize - spec.size);
      await this.#db.updateTable('desktop_pools').set({ spec: JSON.stringify({ ...spec, size: newSize }), state: 'provisioning', updated_at: new Date().toISOString() }).where('name', '=', name).execute();
      return this.#startProvision(name);
    }
    const going = (await this.#desktopsOf(name, undefined)).filter((d) => d.number > newSize);
    const running = [];
    for (const d of going) {
      const vm = await this.#vms.repo.findById(d.vm_id);
      if (vm && !['stopped', 'crashed'].includes(vm.state)) running.push(vm.name);
    }
    if (running.length > 0 && !opts.force) throw new MamoriError('VM_RUNNING', `shrinking ${name} to ${newSize} removes desktops in use (${running.join(', ')}): stop them, or resize with --force`);
    return this.#runJob(name, RESIZE_JOB, ['desktops'], async (jobId) => {
      await this.#db.updateTable('desktop_pools').set({ spec: JSON.stringify({ ...spec, size: newSize }), updated_at: new Date().toISOString() }).where('name', '=', name).execute();
      await this.#jobs.step(jobId, 'desktops', () => runWithConcurrency(going, spec.maintenanceConcurrency, (d) => this.#deleteDesktop(d.vm_id)));
      return { size: newSize, removed: going.length };
    });
  }

  /**
   * Spreads the desktops over the pool's storage pools (optionally a new list) in
   * proportion to their free space, View Composer's rebalance: a replica is made where
   * missing, desktops move from the fullest pools (and from pools no longer listed), and
   * replicas no desktop uses go. Desktops in use stay unless `force`.
   */
  async rebalance(name: string, opts: { storage?: string[]; force?: boolean } = {}): Promise<Job> {
    const pool = await this.#pool(name);
    const spec = JSON.parse(pool.spec) as PoolSpec;
    const storage = opts.storage ?? spec.storage;
    if (!Array.isArray(storage) || storage.length === 0) throw new MamoriError('INVALID_INPUT', 'storage must list at least one storage pool');
    for (const s of storage) assertValidName('storage pool', s);
    const next: PoolSpec = { ...spec, storage: [...new Set(storage)] };
    const master = await this.#vms.repo.findById(spec.master.vmId);
    if (!master) throw new MamoriError('VM_NOT_FOUND', `the master VM ${spec.master.name} is gone`);
    const layers = (await this.#masterDisks(master)).map((d) => snapshotLayer(d, spec.snapshot));
    return this.#runJob(name, REBALANCE_JOB, ['replicas', 'desktops', 'cleanup'], async (jobId) => {
      const replicas = await this.#jobs.step(jobId, 'replicas', () => this.#storage.ensureReplicas(name, next, layers));
      await this.#db.updateTable('desktop_pools').set({ spec: JSON.stringify(next), updated_at: new Date().toISOString() }).where('name', '=', name).execute();
      const moves = await this.#jobs.step(jobId, 'desktops', async () => {
        const rows = await this.#db.selectFrom('pool_desktops').innerJoin('pool_replicas', 'pool_replicas.id', 'pool_desktops.replica_id')
          .select(['pool_desktops.vm_id', 'pool_desktops.number', 'pool_replicas.storage']).where('pool_desktops.pool', '=', name).orderBy('number').execute();
        const free = await Promise.all(next.storage.map(async (s) => {
          const fs = await statfs(await existingParent(this.#paths.pool(s)));
          return Number(fs.bavail) * Number(fs.bsize);
        }));
        const want = shares(rows.length, free);
        const count = new Map(next.storage.map((s) => [s, rows.filter((r) => r.storage === s).length]));
        const moved: string[] = [];
        const skipped: string[] = [];
        // Highest numbers move first; a desktop on a pool no longer listed always moves.
        for (const r of [...rows].reverse()) {
          const here = next.storage.indexOf(r.storage);
          if (here >= 0 && count.get(r.storage)! <= want[here]!) continue;
          const to = next.storage.findIndex((s, i) => count.get(s)! < want[i]!);
          if (to < 0) continue;
          const vm = await this.#stopped(r.vm_id, opts.force === true, skipped);
          if (!vm) continue;
          const target = next.storage[to]!;
          const replica = replicas.get(target)!;
          const from = desktopFiles(this.#paths.pool(r.storage), name, vm.name, spec, replica.files.length);
          const dest = desktopFiles(this.#paths.pool(target), name, vm.name, spec, replica.files.length);
          const paths = await moveDesktopFiles(from, dest, replica.files);
          await this.#db.transaction().execute(async (tx) => {
            for (const [old, now] of paths) await tx.updateTable('disks').set({ path: now, pool: target }).where('path', '=', old).execute();
            await tx.updateTable('pool_desktops').set({ replica_id: replica.id, updated_at: new Date().toISOString() }).where('vm_id', '=', vm.id).execute();
          });
          await rm(from.dir, { recursive: true, force: true });
          if (here >= 0) count.set(r.storage, count.get(r.storage)! - 1);
          count.set(target, count.get(target)! + 1);
          moved.push(`${vm.name}: ${r.storage} -> ${target}`);
          await this.#jobs.progress(jobId, moved.length / rows.length);
        }
        return { moved, skipped };
      });
      const removed = await this.#jobs.step(jobId, 'cleanup', () => this.#storage.removeUnusedReplicas(name, next));
      return { ...moves, replicasRemoved: removed };
    });
  }

  /**
   * A desktop ready to have its disks changed: stopped already, or powered off when `force`.
   * A desktop in use without `force` is added to `skipped` (null back), as is one gone.
   */
  async #stopped(vmId: string, force: boolean, skipped: string[]): Promise<VmRow | null> {
    const vm = await this.#vms.repo.findById(vmId);
    if (!vm) return null;
    if (['stopped', 'crashed'].includes(vm.state)) return vm;
    if (!force) {
      skipped.push(vm.name);
      return null;
    }
    await this.#vms.kill(vm.name);
    return vm;
  }

  /** New OS overlays (on `onto`'s replica, or the desktop's own), a new disposable disk; identity and persistent disks stay. */
  async #rebuild(name: string, spec: PoolSpec, targets: { vm_id: string; replica_id: string }[], o: { force: boolean; jobId: string; onto?: (storage: string) => { id: string; files: string[] } }): Promise<{ rebuilt: string[]; skipped: string[] }> {
    const rebuilt: string[] = [];
    const skipped: string[] = [];
    await runWithConcurrency(targets, spec.maintenanceConcurrency, async (t) => {
      const vm = await this.#stopped(t.vm_id, o.force, skipped);
      if (!vm) return;
      const current = await this.#db.selectFrom('pool_replicas').selectAll().where('id', '=', t.replica_id).executeTakeFirstOrThrow();
      const replica = o.onto ? o.onto(current.storage) : { id: current.id, files: JSON.parse(current.files) as string[] };
      const files = desktopFiles(this.#paths.pool(current.storage), name, vm.name, spec, replica.files.length);
      await writeOsDisks(files, replica.files);
      if (spec.disposableDiskBytes !== null) await writeDisposableDisk(files, spec.disposableDiskBytes);
      // The serial log tells the desktop's customization state: a rebuilt desktop starts over.
      await rm(this.#paths.vmRuntime(vm.id).serialLog, { force: true });
      await this.#db.updateTable('pool_desktops').set({ replica_id: replica.id, state: 'provisioned', message: null, updated_at: new Date().toISOString() }).where('vm_id', '=', vm.id).execute();
      rebuilt.push(vm.name);
      await this.#jobs.progress(o.jobId, (rebuilt.length + skipped.length) / targets.length);
    });
    return { rebuilt, skipped };
  }

  async #deleteDesktop(vmId: string): Promise<void> {
    const vm = await this.#vms.repo.findById(vmId);
    const row = await this.#db.selectFrom('pool_desktops').selectAll().where('vm_id', '=', vmId).executeTakeFirst();
    if (vm) await this.#vms.delete(vm.name, { force: true });
    await this.#db.deleteFrom('pool_desktops').where('vm_id', '=', vmId).execute();
    if (vm && row) {
      const rep = await this.#db.selectFrom('pool_replicas').select('storage').where('id', '=', row.replica_id).executeTakeFirst();
      await rm(join(this.#paths.pool(rep?.storage ?? 'default'), 'desktops', row.pool, vm.name), { recursive: true, force: true });
    }
  }

  /**
   * Moves a desktop's persistent disk (user data) to another desktop of the pool, which
   * hands its own to the first: the two files trade places, so nothing is lost and each
   * desktop keeps one. Both must be stopped.
   */
  async movePersistentDisk(name: string, from: string, to: string): Promise<{ from: string; to: string }> {
    const pool = await this.#pool(name);
    const spec = JSON.parse(pool.spec) as PoolSpec;
    if (spec.persistentDiskBytes === null) throw new MamoriError('INVALID_INPUT', `desktop pool ${name} has no persistent disks`);
    if (from === to) throw new MamoriError('INVALID_INPUT', 'give two different desktops');
    const pair = await this.#desktopsOf(name, [from, to]);
    const disks: string[] = [];
    for (const d of [from, to]) {
      const vm = await this.#vms.get(d);
      if (!['stopped', 'crashed'].includes(vm.state)) throw new MamoriError('VM_RUNNING', `desktop ${d} is ${vm.state}: stop it before moving its persistent disk`);
      const disk = await this.#disks.get(`${d}-persistent`);
      if (!pair.some((p) => p.vm_id === vm.id)) throw new MamoriError('VM_NOT_FOUND', `${d} is not a desktop of ${name}`);
      disks.push(disk.path);
    }
    await this.#lock.run(`persistent:${name}`, () => swapFiles(disks[0]!, disks[1]!));
    return { from, to };
  }

  /** Deletes every desktop (with its persistent disk), then the replicas, then the pool. */
  async delete(name: string): Promise<Job> {
    await this.#pool(name);
    await this.#db.updateTable('desktop_pools').set({ state: 'deleting', updated_at: new Date().toISOString() }).where('name', '=', name).execute();
    return this.#runJob(name, DELETE_JOB, ['desktops', 'replicas'], async (jobId) => {
      const pool = await this.#pool(name);
      const spec = JSON.parse(pool.spec) as PoolSpec;
      const rows = await this.#db.selectFrom('pool_desktops').selectAll().where('pool', '=', name).execute();
      let done = 0;
      await this.#jobs.step(jobId, 'desktops', () => runWithConcurrency(rows, spec.maintenanceConcurrency, async (r) => {
        await this.#deleteDesktop(r.vm_id);
        await this.#jobs.progress(jobId, (++done / Math.max(rows.length, 1)) * 0.9);
      }));
      await this.#jobs.step(jobId, 'replicas', async () => {
        for (const rep of await this.#db.selectFrom('pool_replicas').selectAll().where('pool', '=', name).execute()) {
          await removeReplica(JSON.parse(rep.files) as string[]);
          await rm(join(this.#paths.pool(rep.storage), 'desktops', name), { recursive: true, force: true });
          await rm(join(this.#paths.pool(rep.storage), 'replicas', name), { recursive: true, force: true });
        }
        await this.#db.deleteFrom('desktop_pools').where('name', '=', name).execute();
      });
      return { deleted: name, desktops: rows.length };
    });
  }

  async #masterDisks(master: VmRow): Promise<Awaited<ReturnType<DiskRepo['byIds']>>> {
    const ids = replicatedDiskIds(master.definition);
    const disks = await this.#disks.repo.byIds(ids);
    const ordered = ids.map((id) => disks.find((d) => d.id === id)!).filter(Boolean);
    if (ordered.length === 0) throw new MamoriError('INVALID_INPUT', `VM ${master.name} has no disk to clone`);
    return ordered;
  }

  /** Starts (or resumes) provisioning: replicas where missing, then desktops 1..size where missing. */
  async #startProvision(name: string): Promise<Job> {
    return this.#runJob(name, PROVISION_JOB, ['replicas', 'desktops'], async (jobId) => {
      const pool = await this.#pool(name);
      const spec = JSON.parse(pool.spec) as PoolSpec;
      const master = await this.#vms.repo.findById(spec.master.vmId);
      if (!master) throw new MamoriError('VM_NOT_FOUND', `the master VM ${spec.master.name} is gone`);
      const masterDisks = await this.#masterDisks(master);
      const layers = masterDisks.map((d) => snapshotLayer(d, spec.snapshot));
      const replicas = await this.#jobs.step(jobId, 'replicas', () => this.#storage.ensureReplicas(name, spec, layers));
      const existing = new Set((await this.#db.selectFrom('pool_desktops').select('number').where('pool', '=', name).execute()).map((r) => r.number));
      const missing = Array.from({ length: spec.size }, (_, i) => i + 1).filter((n) => !existing.has(n));
      const names = desktopNames(spec.namePattern, missing);
      let done = 0;
      const items = missing.map((n, i) => ({ n, name: names[i]!, storage: spec.storage[(n - 1) % spec.storage.length]! }));
      await this.#jobs.step(jobId, 'desktops', async () => {
        // In batches: every desktop's files, then one syncfs per storage pool, then the batch's
        // rows in one transaction. A row never names a file a power cut could lose.
        const batchSize = spec.concurrency * 4;
        for (let b = 0; b < items.length; b += batchSize) {
          const batch = items.slice(b, b + batchSize);
          // Spread over the storage pools in turn (rebalance evens them out by free space later).
          await this.#storage.makeDesktops(name, spec, master.definition, masterDisks.map((d) => d.sizeBytes), batch, replicas);
          done += batch.length;
          await this.#jobs.progress(jobId, done / missing.length);
        }
      });
      await this.#db.updateTable('desktop_pools').set({ state: 'ready', message: null, updated_at: new Date().toISOString() }).where('name', '=', name).execute();
      return { pool: name, made: missing.length, desktops: spec.size };
    });
  }

  /** One operation per pool at a time; the job fails with the error and the pool says why. */
  async #runJob(name: string, kind: string, steps: string[], body: (jobId: string) => Promise<unknown>): Promise<Job> {
    if (this.#busy.has(name)) throw new MamoriError('DESKTOP_POOL_BUSY', `desktop pool ${name} is busy with another operation; wait for its job to end`);
    this.#busy.add(name);
    const job = await this.#jobs.create(kind, name, steps).catch((e: unknown) => {
      this.#busy.delete(name);
      throw e;
    });
    void (async () => {
      try {
        await this.#jobs.succeed(job.id, await body(job.id));
      } catch (e) {
        const err = { code: isMamoriError(e) ? e.code : 'INTERNAL', message: (e as Error).message };
        this.#log.warn({ pool: name, job: job.id, err }, `${kind} failed`);
        await this.#db.updateTable('desktop_pools').set({ state: 'error', message: err.message, updated_at: new Date().toISOString() }).where('name', '=', name).execute().catch(() => undefined);
        await this.#jobs.fail(job.id, err);
      } finally {
        this.#busy.delete(name);
      }
    })();
    return job;
  }

  async #pool(name: string): Promise<{ name: string; spec: string; state: string; message: string | null }> {
    const p = await this.#db.selectFrom('desktop_pools').selectAll().where('name', '=', name).executeTakeFirst();
    if (!p) throw new MamoriError('DESKTOP_POOL_NOT_FOUND', `no desktop pool named ${JSON.stringify(name)}; see 'mamori pool list'`);
    return p;
  }

  async #desktopsOf(pool: string, names: string[] | undefined): Promise<{ vm_id: string; replica_id: string; number: number }[]> {
    const rows = await this.#db.selectFrom('pool_desktops').innerJoin('vms', 'vms.id', 'pool_desktops.vm_id')
      .select(['pool_desktops.vm_id', 'pool_desktops.replica_id', 'pool_desktops.number', 'vms.name']).where('pool_desktops.pool', '=', pool).orderBy('number').execute();
    if (!names || names.length === 0) return rows;
    const unknown = names.filter((n) => !rows.some((r) => r.name === n));
    if (unknown.length > 0) throw new MamoriError('VM_NOT_FOUND', `desktop pool ${pool} has no desktop ${unknown.join(', ')}`);
    return rows.filter((r) => names.includes(r.name));
  }
}

/** Two files trade places (a rename through a temporary name, in the first file's folder). */
async function swapFiles(a: string, b: string): Promise<void> {
  const tmp = `${a}.swap`;
  await rename(a, tmp);
  try {
    await rename(b, a);
  } catch (e) {
    await rename(tmp, a);
    throw e;
  }
  await rename(tmp, b);
}


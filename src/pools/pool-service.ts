import { rename } from 'node:fs/promises';
import type { StoreHandle } from '../store/store-handle.js';
import { DesktopPoolRepo, type PoolRecord } from '../store/repos/desktop-pool-repo.js';
import { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import type { PoolOperation, PoolSpec } from '../store/repos/pool-records.js';
import type { VmService } from '../vms/vm-service.js';
import type { DiskService } from '../disks/disk-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { POOL_LIMITS, desktopNames, intOption, poolSpecOf, snapshotName, type PoolCreateInput } from './pool-spec.js';
import { measureReplica } from './pool-replica.js';
import { listPools, poolView, type PoolSummary, type PoolView } from './pool-views.js';
import { assertRoom } from './storage-space.js';
import { PoolOperations } from './pool-operations.js';
import { guestOsOf } from './master-guest.js';
import { assertRoomFor } from './pool-network.js';
import { isInUse } from './pool-spares.js';
import { DesktopSessions } from './desktop-sessions.js';
import { desktopsNamed } from './pool-desktops.js';
import { OPERATION_JOB, OPERATION_STATE, recordedOperation } from './pool-operation.js';

/**
 * Desktop pools of linked clones (View Composer): a replica of the master's snapshot per
 * storage pool, and desktops whose OS disks are overlays on it, each with an identity disk
 * that customizes it. This checks what is asked and records it; PoolOperations does it. Each
 * operation runs as a job, one at a time per pool, recorded before it starts, so a server
 * stopped mid-way resumes it at its next start and a failed one resumes with `pool resume`.
 * Who uses the desktops (assignments, sessions) and the spares kept for them are `sessions`
 * (desktop-sessions.ts), built here because spares wait while an operation runs on a pool;
 * src/main.ts binds VmSupervisor's power-off port to it, and gives VmService the pools' guard
 * (pool-guards.ts) that keeps a master and its snapshot from deletion.
 */
export class PoolService {
  #pools: DesktopPoolRepo;
  #desktops: PoolDesktopRepo;
  #vms: VmService;
  #disks: DiskService;
  #jobs: JobJournal;
  #paths: SitePaths;
  #log: Logger;
  #lock = new KeyedLock();
  #ops: PoolOperations;
  #busy = new Set<string>();
  readonly sessions: DesktopSessions;

  constructor(deps: {
    db: StoreHandle;
    vms: VmService;
    disks: DiskService;
    jobs: JobJournal;
    paths: SitePaths;
    log: Logger;
  }) {
    this.#pools = new DesktopPoolRepo(deps.db);
    this.#desktops = new PoolDesktopRepo(deps.db);
    this.#vms = deps.vms;
    this.#disks = deps.disks;
    this.#jobs = deps.jobs;
    this.#paths = deps.paths;
    this.#log = deps.log;
    this.#ops = new PoolOperations({ ...deps, pools: this.#pools, desktops: this.#desktops });
    this.sessions = new DesktopSessions({
      vms: deps.vms,
      paths: deps.paths,
      log: deps.log,
      pools: this.#pools,
      desktops: this.#desktops,
      operationRunning: (pool) => this.#busy.has(pool),
    });
    for (const kind of Object.values(OPERATION_JOB)) {
      this.#jobs.define(kind, async (job) => {
        // Work that was complete is not resumed (nothing would take it up) nor called failed:
        // the job succeeded. A delete cut after its last row went: the pool is gone. Any
        // operation cut after its record ended (the pool ready, no operation), before its job did.
        const row = job.target ? await this.#pools.find(job.target) : undefined;
        if (job.target && !row)
          return {
            finished: `the site server stopped during ${kind.kind} of ${job.target}, which had done its work: the pool is gone`,
          };
        if (row && row.state === 'ready' && recordedOperation(row) === null)
          return {
            finished: `the site server stopped during ${kind.kind} of ${job.target}, which had done its work: the pool is ready`,
          };
        const message = `${kind.kind} was cut by a server stop; it resumes at start, where it stopped`;
        if (job.target) await this.#pools.markInterrupted(job.target, message, new Date().toISOString());
        return `the site server stopped during ${kind.kind} of ${job.target}: ${message}; a new job takes it up`;
      });
    }
  }

  /** At server start: every operation a stop cut is taken up again, with its first options, where it stopped. */
  async resumeInterrupted(): Promise<void> {
    for (const p of await this.#pools.notFailed()) {
      const op = recordedOperation(p);
      if (!op) continue;
      this.#log.info({ pool: p.name, operation: op.kind }, 'resuming a desktop pool operation cut by a server stop');
      await this.#start(p.name, op).catch((e: unknown) =>
        this.#log.error({ pool: p.name, err: e }, 'resuming the pool failed'),
      );
    }
    // Not awaited: powering on spares (a VM start each) must not keep the server from listening.
    for (const p of await this.#pools.names()) void this.sessions.keepSpares(p);
  }

  /** `pool resume`: a failed operation run again (after its cause is mended), with its first options, where it stopped. */
  async resume(name: string): Promise<Job> {
    const pool = await this.#pool(name);
    const op = recordedOperation(pool);
    if (!op)
      throw new MamoriError(
        'INVALID_INPUT',
        `desktop pool ${name} is ${pool.state}: it has no failed or cut operation to resume`,
      );
    return this.#start(name, op);
  }

  async create(input: PoolCreateInput): Promise<Job> {
    assertValidName('desktop pool', input.name);
    return this.#lock.run('create', async () => {
      if (await this.#pools.exists(input.name)) {
        throw new MamoriError('DESKTOP_POOL_EXISTS', `a desktop pool named ${input.name} exists; pick another name`);
      }
      const master = await this.#vms.get(input.master);
      const layers = await this.#ops.snapshotLayers(master, snapshotName(input.snapshot));
      // The snapshot's OS decides how desktops customize (and whether KMS applies): read, not asked.
      const spec = poolSpecOf(input, master, await guestOsOf(layers));
      if (spec.network && master.definition.nics.length === 0)
        throw new MamoriError(
          'INVALID_INPUT',
          `network customization sets the desktops' first NIC, and the master ${master.name} has none: give it one (mamori vm create ... --network NET) and take a new snapshot`,
        );
      const names = desktopNames(
        spec.namePattern,
        Array.from({ length: spec.size }, (_, i) => i + 1),
        spec.guestOs,
      );
      for (const n of names) {
        if (await this.#vms.repo.findByName(n))
          throw new MamoriError(
            'VM_EXISTS',
            `the name pattern gives ${n}, which an existing VM has; use another pattern`,
            { details: { name: n } },
          );
      }
      await assertRoom((st) => this.#paths.pool(st), spec, await measureReplica(layers), spec.size);
      const now = new Date().toISOString();
      const op: PoolOperation = { kind: 'provision' };
      await this.#pools.insert({ name: input.name, spec, state: OPERATION_STATE.provision, operation: op, at: now });
      return this.#start(input.name, op);
    });
  }

  async list(): Promise<PoolSummary[]> {
    return listPools(this.#pools, this.#desktops);
  }

  async show(name: string): Promise<PoolView> {
    return poolView(
      { pools: this.#pools, desktops: this.#desktops, vms: this.#vms.repo },
      this.#paths,
      await this.#pool(name),
    );
  }

  /**
   * Discards each desktop's changes: new OS overlays on the same replica and a new
   * disposable disk; the identity and persistent disks stay. Running desktops are skipped
   * unless `force` (then powered off first).
   */
  async refresh(name: string, opts: { desktops?: string[]; force?: boolean } = {}): Promise<Job> {
    await this.#pool(name);
    const targets = await desktopsNamed(this.#desktops, name, opts.desktops);
    return this.#start(name, { kind: 'refresh', force: opts.force === true }, { pending: targets.map((t) => t.vmId) });
  }

  /**
   * Moves the pool to another snapshot of its master (View Composer's recompose): new
   * replicas, then every desktop rebuilt on them in rolling batches of the maintenance
   * concurrency, identity and persistent disks kept. Desktops in use are skipped unless
   * `force`; they stay on the old replica, which goes once no desktop uses it.
   */
  async recompose(name: string, snapshot: string, opts: { force?: boolean } = {}): Promise<Job> {
    const spec = await this.#spec(name);
    // Only desktops not on the snapshot yet: run again, it finishes what in-use desktops left.
    const behind = await this.#desktops.notOnSnapshot(name, snapshot);
    if (snapshot === spec.snapshot && behind.length === 0) {
      throw new MamoriError(
        'INVALID_INPUT',
        `desktop pool ${name} already runs on snapshot ${snapshot}: take a new snapshot of ${spec.master.name} and recompose onto that`,
      );
    }
    const layers = await this.#ops.snapshotLayers(await this.#ops.master(spec), snapshot);
    await assertRoom(
      (st) => this.#paths.pool(st),
      { ...spec, persistentDiskBytes: 0, disposableDiskBytes: 0 },
      await measureReplica(layers),
      0,
    );
    return this.#start(name, { kind: 'recompose', snapshot, force: opts.force === true }, { pending: behind });
  }

  /** Grows the pool (new desktops, customized as the first) or shrinks it from the highest numbers. */
  async resize(name: string, size: number, opts: { force?: boolean } = {}): Promise<Job> {
    const spec = await this.#spec(name);
    const newSize = intOption('size', size, spec.size, POOL_LIMITS.size);
    if (newSize > spec.size) {
      const names = desktopNames(
        spec.namePattern,
        Array.from({ length: newSize - spec.size }, (_, i) => spec.size + i + 1),
        spec.guestOs,
      );
      for (const n of names) {
        if (await this.#vms.repo.findByName(n))
          throw new MamoriError('VM_EXISTS', `growing the pool makes ${n}, which an existing VM has`, {
            details: { name: n },
          });
      }
      if (spec.network) assertRoomFor(spec.network, newSize);
      await assertRoom((st) => this.#paths.pool(st), spec, 0, newSize - spec.size);
      // Provisioning makes the desktops the spec's size lacks; the new size is written with its record.
      return this.#start(name, { kind: 'provision' }, { spec: { ...spec, size: newSize } });
    }
    const inUse = (await this.#desktops.desktopsAbove(name, newSize)).filter(isInUse).map((r) => r.name);
    if (inUse.length > 0 && !opts.force)
      throw new MamoriError(
        'VM_RUNNING',
        `shrinking ${name} to ${newSize} removes desktops in use (assigned or with a session: ${inUse.join(', ')}): unassign them and end their sessions, or resize with --force`,
      );
    return this.#start(
      name,
      { kind: 'resize', size: newSize, force: opts.force === true },
      { spec: { ...spec, size: newSize } },
    );
  }

  /**
   * Spreads the desktops over the pool's storage pools (optionally a new list) in
   * proportion to their free space, View Composer's rebalance: a replica is made where
   * missing, desktops move from the fullest pools (and from pools no longer listed), and
   * replicas no desktop uses go. Desktops in use stay unless `force`.
   */
  async rebalance(name: string, opts: { storage?: string[]; force?: boolean } = {}): Promise<Job> {
    const spec = await this.#spec(name);
    const storage = opts.storage ?? spec.storage;
    if (!Array.isArray(storage) || storage.length === 0)
      throw new MamoriError('INVALID_INPUT', 'storage must list at least one storage pool');
    for (const s of storage) assertValidName('storage pool', s);
    await this.#ops.master(spec);
    return this.#start(name, { kind: 'rebalance', storage: [...new Set(storage)], force: opts.force === true });
  }

  /** Deletes every desktop (with its persistent disk), then the replicas, then the pool. */
  async delete(name: string): Promise<Job> {
    await this.#pool(name);
    return this.#start(name, { kind: 'delete' });
  }

  /**
   * Moves a desktop's persistent disk (user data) to another desktop of the pool, which
   * hands its own to the first: the two files trade places, so nothing is lost and each
   * desktop keeps one. Both must be stopped.
   */
  async movePersistentDisk(name: string, from: string, to: string): Promise<{ from: string; to: string }> {
    const pool = await this.#pool(name);
    const spec = pool.spec;
    if (spec.persistentDiskBytes === null)
      throw new MamoriError('INVALID_INPUT', `desktop pool ${name} has no persistent disks`);
    if (from === to) throw new MamoriError('INVALID_INPUT', 'give two different desktops');
    const pair = await desktopsNamed(this.#desktops, name, [from, to]);
    const disks: string[] = [];
    for (const d of [from, to]) {
      const vm = await this.#vms.get(d);
      if (!['stopped', 'crashed'].includes(vm.state))
        throw new MamoriError('VM_RUNNING', `desktop ${d} is ${vm.state}: stop it before moving its persistent disk`);
      const disk = await this.#disks.get(`${d}-persistent`);
      if (!pair.some((p) => p.vmId === vm.id))
        throw new MamoriError('VM_NOT_FOUND', `${d} is not a desktop of ${name}`);
      disks.push(disk.path);
    }
    await this.#lock.run(`persistent:${name}`, () => swapFiles(disks[0]!, disks[1]!));
    return { from, to };
  }

  /**
   * Runs an operation as a job, one per pool at a time. Its record (and the desktops it has
   * to do, and the spec it changes) is written first, in one transaction; it is cleared when
   * the operation ends well. A failure leaves it for `pool resume`, and the pool says why.
   */
  async #start(name: string, op: PoolOperation, with_: { pending?: string[]; spec?: PoolSpec } = {}): Promise<Job> {
    if (this.#busy.has(name))
      throw new MamoriError(
        'DESKTOP_POOL_BUSY',
        `desktop pool ${name} is busy with another operation; wait for its job to end`,
      );
    this.#busy.add(name);
    const kind = OPERATION_JOB[op.kind];
    const work = this.#ops.work(name, op);
    let job: Job;
    try {
      // One transaction: the pool's record and its desktops' pending marks (desktop-pool-repo.ts).
      await this.#pools.startOperation(name, {
        state: OPERATION_STATE[op.kind],
        operation: op,
        at: new Date().toISOString(),
        ...(with_.spec ? { spec: with_.spec } : {}),
        ...(with_.pending ? { pending: with_.pending } : {}),
      });
      job = await this.#jobs.create(kind, name, { steps: work.steps });
    } catch (e) {
      this.#busy.delete(name);
      throw e;
    }
    void (async () => {
      try {
        const result = await work.run(job.id);
        const skipped = Array.isArray(result['skipped']) ? (result['skipped'] as string[]) : [];
        await this.#pools.operationEnded(
          name,
          skipped.length > 0
            ? `${op.kind} skipped desktops in use: ${skipped.join(', ')}; stop them and run it again, or run it with --force`
            : null,
          new Date().toISOString(),
        );
        // Before the job ends, so whoever waits for it finds the spares powering on.
        const sparesStarted = op.kind === 'delete' ? [] : (await this.sessions.startSpares(name)).started;
        await this.#jobs.succeed(job.id, { ...result, ...(sparesStarted.length > 0 ? { sparesStarted } : {}) });
      } catch (e) {
        const err = { code: isMamoriError(e) ? e.code : 'INTERNAL', message: (e as Error).message };
        this.#log.warn({ pool: name, job: job.id, err }, `${kind} failed`);
        await this.#pools
          .operationFailed(
            name,
            `${err.message} (mend the cause, then: mamori pool resume ${name})`,
            new Date().toISOString(),
          )
          .catch(() => undefined);
        await this.#jobs.fail(job.id, err);
      } finally {
        this.#busy.delete(name);
      }
    })();
    return job;
  }

  async #spec(name: string): Promise<PoolSpec> {
    return (await this.#pool(name)).spec;
  }

  async #pool(name: string): Promise<PoolRecord> {
    const p = await this.#pools.find(name);
    if (!p)
      throw new MamoriError(
        'DESKTOP_POOL_NOT_FOUND',
        `no desktop pool named ${JSON.stringify(name)}; see 'mamori pool list'`,
      );
    return p;
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

import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import type {
  ReplicaDiskSpec,
  ReplicaPointView,
  ReplicaStorage,
  ReplicaView,
} from '../store/records/replica-record.js';
// The replica records live in store/ (issue 20); re-exported for the callers of this service.
export type {
  ReplicaDiskSpec,
  ReplicaPointView,
  ReplicaStorage,
  ReplicaView,
} from '../store/records/replica-record.js';
import { ReplicaChain, type ChainLayer, type PointConsistency } from './replica-chain.js';
import { ReplicaRemoval, replicaInUse, type ReplicaUsers } from './replica-removal.js';
import { ReplicaCycleServer, type CycleTarget } from './replica-cycle-server.js';
import { ReplicaUpkeep } from './replica-upkeep.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { verifyWriteLog, type WriteLogReport } from '../guest/writelog-verifier.js';
import type { Logger } from '../core/logger.js';
import { readSeedDelta, type SeedDelta } from './seed-delta.js';
import { RecoveryJournals, type JournalBase, type JournalCheckpoint } from '../cdp/recovery-journals.js';
import { JournalPointServer } from '../cdp/journal-point-server.js';
import { PointInTimeExports } from '../cdp/point-in-time-exports.js';
import { forecastJournal, type JournalForecast } from '../cdp/journal-forecast.js';
import type { BackingRef } from '../qemu/qemu-img-write.js';
import { ReplicaJournalPoints, journalPointTime, type PointFiles } from './replica-journal-points.js';
import type { Duplex } from 'node:stream';

// PointFiles lives with the journal's points, which make them too; re-exported for callers.
export type { PointFiles } from './replica-journal-points.js';

/** A replica as the recovery site's operator sees it. */
export interface ReplicaSummary extends ReplicaView {
  /** receiving: the source replicates into it; promoted: a failover made it a VM's disks; retired: a later reprotect replaced it. */
  state: 'receiving' | 'promoted' | 'retired';
  storage: ReplicaStorage;
  usedBy: ReplicaUsers;
  /** A continuous replica's journal and whether its window fits here; null without a journal. */
  journal: JournalForecast | null;
}

/**
 * The recovery side of replication: one replica per protected VM, one ReplicaChain per disk.
 * A cycle opens a staging overlay on every disk and serves them writable over NBD with TLS,
 * accepting only the source site's client certificate. A point exists once every disk's
 * chain has committed and the replica_points row is written: that row is the commit of a
 * multi-disk point, so a crash between two disks' commits never shows a half point.
 * The storage daemons serving cycles are ReplicaCycleServer's (replica-cycle-server.ts); withdrawal,
 * retention, compaction and the repair at start are ReplicaUpkeep's (replica-upkeep.ts).
 */
export class ReplicaService {
  #repo: ReplicaRepo;
  #root: string;
  #log: Logger;
  /** Per replica: cycles, commits, promotion, deletion and the upkeep at start take turns. */
  #lock = new KeyedLock();
  #cycles: ReplicaCycleServer;
  #removal: ReplicaRemoval;
  #upkeep: ReplicaUpkeep;
  #journals: RecoveryJournals;
  #journalPoints: ReplicaJournalPoints;
  /** The points in time recovered VMs stand on (instant recovery). */
  #exports: PointInTimeExports;

  constructor(deps: { db: StoreHandle; dataDir: string; log: Logger }) {
    this.#repo = new ReplicaRepo(deps.db);
    this.#root = join(deps.dataDir, 'replicas');
    this.#log = deps.log;
    this.#cycles = new ReplicaCycleServer({
      root: this.#root,
      stagingDir: join(deps.dataDir, 'staging-daemon'),
      log: deps.log,
    });
    this.#removal = new ReplicaRemoval({ db: deps.db, root: this.#root, log: deps.log });
    this.#journals = new RecoveryJournals({ root: this.#root, log: deps.log });
    this.#journalPoints = new ReplicaJournalPoints({
      journals: this.#journals,
      root: this.#root,
      replica: (id) => this.get(id),
      recordedDiskPoints: (id, pointId) => this.#recordedDiskPoints(id, pointId),
    });
    this.#exports = new PointInTimeExports({
      root: join(deps.dataDir, 'pit'),
      open: (key, dir) => this.#journalPoints.serve(key.replicaId, key.timeUs, dir),
    });
    this.#upkeep = new ReplicaUpkeep({
      repo: this.#repo,
      root: this.#root,
      removal: this.#removal,
      cycles: this.#cycles,
      lock: this.#lock,
      log: deps.log,
      journalBases: (id) => this.#journals.basePoints(id),
    });
  }

  /**
   * The replica of a VM of `sourceSite`. `seeds` (reprotect): per disk, the layers of the disk
   * this site already holds for the VM, under each chain's base, so only differences are sent.
   */
  async create(input: {
    sourceSite: string;
    sourceVmId: string;
    vmName: string;
    disks: ReplicaDiskSpec[];
    keepPoints: number;
    seeds?: ChainLayer[][];
  }): Promise<ReplicaView> {
    const existing = await this.#repo.findIdBySource(input.sourceSite, input.sourceVmId);
    if (existing !== undefined) {
      // Enabling again after a disable on the source keeps what this site holds.
      await this.#repo.setKeepPoints(existing, input.keepPoints);
      return this.get(existing);
    }
    // Like a datastore capacity check: room for every disk written in full, so a replica
    // never stops halfway on a full pool. Nothing is made when it does not fit.
    await mkdir(this.#root, { recursive: true });
    const st = await statfs(this.#root);
    const free = st.bavail * st.bsize;
    const need = input.disks.reduce((n, d) => n + d.sizeBytes, 0);
    if (free < need) {
      throw new MamoriError(
        'POOL_FULL',
        `the recovery site's storage has ${Math.floor(free / 2 ** 20)} MiB free but the replica of ${input.vmName} needs up to ${Math.ceil(need / 2 ** 20)} MiB; free space or use a larger pool`,
        { details: { freeBytes: free, neededBytes: need } },
      );
    }
    const id = newShortId('rep');
    const dir = join(this.#root, id);
    try {
      for (const [i, d] of input.disks.entries()) {
        const seed = input.seeds?.[i];
        await ReplicaChain.create(join(dir, `disk${d.index}`), { virtualSize: d.sizeBytes, ...(seed ? { seed } : {}) });
      }
      await this.#repo.insert({
        id,
        sourceSite: input.sourceSite,
        sourceVmId: input.sourceVmId,
        vmName: input.vmName,
        disks: input.disks,
        keepPoints: input.keepPoints,
        createdAt: new Date().toISOString(),
      });
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return this.get(id);
  }

  async get(id: string): Promise<ReplicaView> {
    const r = await this.#repo.get(id);
    if (!r) throw new MamoriError('NOT_FOUND', `no replica ${id} on this site`);
    return r;
  }

  async list(): Promise<ReplicaView[]> {
    const ids = await this.#repo.ids();
    return Promise.all(ids.map((r) => this.get(r)));
  }

  async storage(id: string): Promise<ReplicaStorage> {
    const replica = await this.get(id);
    const out: ReplicaStorage = { points: replica.points.length, chainLength: 0, bytes: 0, seedBytes: 0 };
    for (const d of replica.disks) {
      const s = await (await ReplicaChain.open(join(this.#root, id, `disk${d.index}`))).storage();
      out.chainLength = Math.max(out.chainLength, s.layers);
      out.bytes += s.bytes;
      out.seedBytes += s.seedBytes;
    }
    return out;
  }

  async summary(id: string): Promise<ReplicaSummary> {
    const view = await this.get(id);
    const state = ReplicaRemoval.isRetired(view.sourceVmId)
      ? 'retired'
      : view.promotedAt !== null
        ? 'promoted'
        : 'receiving';
    return {
      ...view,
      state,
      storage: await this.storage(id),
      usedBy: await this.#removal.usersOf(id),
      journal: await this.journalForecast(id),
    };
  }

  /** What a continuous replica's journal holds and will take over its window, against the room here; null without one. */
  async journalForecast(id: string): Promise<JournalForecast | null> {
    const usage = await this.#journals.usage(id);
    if (usage === null) return null;
    const st = await statfs(this.#root);
    return forecastJournal(usage, st.bavail * st.bsize);
  }

  /**
   * Deletes a replica, its files and rows together (see replica-removal.ts). Refused while a
   * VM made from it exists or another replica reads it as its seed. `assertSourceDone` throws
   * if its source still replicates into it (asked of the source site; only for a replica
   * neither promoted nor retired).
   */
  async delete(id: string, assertSourceDone: (replica: ReplicaView) => Promise<void>): Promise<void> {
    await this.#lock.run(id, async () => {
      const replica = await this.get(id);
      const users = await this.#removal.usersOf(id);
      if (users.vms.length > 0 || users.replicas.length > 0)
        throw replicaInUse(`the replica ${id} of ${replica.vmName}`, users);
      if (!ReplicaRemoval.isRetired(replica.sourceVmId) && replica.promotedAt === null) await assertSourceDone(replica);
      await this.#cycles.close(id);
      await this.#journals.close(id);
      await this.#cycles.release(id);
      await this.#cycles.killLeftover(id);
      await this.#removal.remove(id);
      this.#log.info({ replica: id, vm: replica.vmName, source: replica.sourceSite }, 'replica deleted');
    });
  }

  /** Opens staging on every disk, exported on the staging daemon for the source site's streams. */
  async beginCycle(id: string): Promise<CycleTarget> {
    return this.#lock.run(id, async () => {
      const replica = await this.get(id);
      if (replica.promotedAt !== null) {
        throw new MamoriError(
          'REPLICA_PROMOTED',
          `the replica of ${replica.vmName} was promoted here at ${replica.promotedAt} (failover generation ${replica.failoverGeneration}): ` +
            'the VM now runs at this site, so the copy at the source is superseded; reprotect to replicate it back',
          { details: { generation: replica.failoverGeneration, promotedAt: replica.promotedAt } },
        );
      }
      await this.#repo.touchContact(id, new Date().toISOString());
      await this.#cycles.close(id);
      const dir = join(this.#root, id);
      await this.#cycles.killLeftover(id);
      const chains = await Promise.all(replica.disks.map((d) => ReplicaChain.open(join(dir, `disk${d.index}`))));
      await this.#upkeep.withdrawUnrecordedPoints(id, chains);
      return this.#cycles.serve(id, chains);
    });
  }

  async commitCycle(
    id: string,
    cycleId: string,
    meta: { time: string; consistency: PointConsistency },
  ): Promise<ReplicaPointView> {
    return this.#lock.run(id, async () => {
      const chains = await this.#cycles.end(id, cycleId);
      const perDisk = [];
      for (const c of chains) perDisk.push((await c.commitCycle(meta, { closedByDaemon: true })).id);
      const committedAt = new Date().toISOString();
      const pointId = perDisk[0]!;
      await this.#repo.addPoint(id, {
        pointId,
        time: meta.time,
        consistency: meta.consistency,
        committedAt,
        diskPoints: perDisk,
      });
      await this.#upkeep.retain(id, chains);
      this.#upkeep.compactLater(id);
      return {
        id: pointId,
        time: meta.time,
        consistency: meta.consistency,
        committedAt,
        storage: await this.storage(id),
      };
    });
  }

  /**
   * Where the calling site's stream into a disk of its open cycle goes (api/cycle-streams.ts):
   * only the site the replica belongs to, only the cycle open now.
   */
  async cycleStream(
    id: string,
    cycleId: string,
    disk: number,
    caller: string,
  ): Promise<ReturnType<ReplicaCycleServer['stream']>> {
    const replica = await this.get(id).catch(() => null);
    if (replica === null || replica.sourceSite !== caller)
      throw new MamoriError('NOT_FOUND', `no replica ${id} for site ${caller}`);
    return this.#cycles.stream(id, cycleId, disk);
  }

  /**
   * Continuous replication (issue 22): the source starts the replica's journal over one of its
   * points, the newest it committed after its tap began (a journal there before goes).
   */
  async beginJournal(id: string, caller: string, basePointId: string, windowMs?: number): Promise<JournalBase> {
    return this.#lock.run(id, async () => {
      const replica = await this.#ownedBy(id, caller);
      if (!replica.points.some((p) => p.id === basePointId))
        throw new MamoriError('NOT_FOUND', `replica ${id} has no point ${basePointId} to start a journal over`);
      return this.#journals.begin(id, {
        basePointId,
        disks: replica.disks.map((d) => d.index),
        ...(windowMs === undefined ? {} : { windowMs }),
        keepAll: await this.#repo.isHeld(id),
      });
    });
  }

  /** What serves the source's journal stream of one disk (api/journal-streams.ts), once the caller is checked. */
  async journalStream(
    id: string,
    disk: number,
    caller: string,
    basePointId: string | null = null,
  ): Promise<(wire: Duplex) => Promise<void>> {
    await this.#ownedBy(id, caller);
    const base = await this.#journals.base(id);
    if (base === null)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `replica ${id} has no journal: the source starts one (POST /replicas/${id}/journal) before it streams`,
      );
    // A stream of an ended session (a request delayed in the network) must not feed the new
    // epoch: it would append another journal's records from its first.
    if (basePointId !== null && basePointId !== base.basePointId)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `replica ${id}'s journal now replays over point ${base.basePointId}, not ${basePointId}: that session has ended`,
      );
    return (wire) => this.#journals.receive(id, disk, wire);
  }

  /** The replica's journal checkpoints within a range (µs since the epoch), oldest first. */
  async checkpoints(id: string, range: { fromUs?: number; toUs?: number }): Promise<JournalCheckpoint[]> {
    const replica = await this.get(id);
    const listed = await this.#journals.checkpoints(id, range);
    if (listed === null)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `${replica.vmName} replicates in cycles, without a journal: its points are listed by 'mamori replicate points ${replica.vmName}'`,
      );
    return listed;
  }

  /** The replica of a VM of `caller`, still receiving; NOT_FOUND for another site's, as cycleStream says. */
  async #ownedBy(id: string, caller: string): Promise<ReplicaView> {
    const replica = await this.get(id).catch(() => null);
    if (replica === null || replica.sourceSite !== caller)
      throw new MamoriError('NOT_FOUND', `no replica ${id} for site ${caller}`);
    if (replica.promotedAt !== null)
      throw new MamoriError(
        'REPLICA_PROMOTED',
        `replica ${id} was promoted at ${replica.promotedAt}: it takes no more writes from ${caller}`,
      );
    return replica;
  }

  /** Digests of a span of one disk's newest point, for a resync (ReplicaCycleServer.checksums). */
  async checksums(
    id: string,
    cycleId: string,
    input: { disk: number; offset: number; length: number; chunkSize: number },
  ): Promise<Buffer> {
    return this.#lock.run(id, () => this.#cycles.checksums(id, cycleId, input));
  }

  /** Reprotect: what the seed's disks wrote after their last point (seed-delta.ts); null if none was recorded. */
  async seedDelta(id: string): Promise<SeedDelta | null> {
    await this.get(id);
    return readSeedDelta(join(this.#root, id));
  }

  /** The files of a point (the newest when pointId is null), for overlays of recovered VMs. */
  async pointFiles(id: string, pointId: string | null): Promise<PointFiles> {
    const at = pointId === null ? null : journalPointTime(pointId);
    if (at !== null)
      throw new MamoriError(
        'INVALID_INPUT',
        `${pointId} is a point in time of a journal: it is served (servePointInTime), not a file`,
      );
    const replica = await this.get(id);
    const point = pointId === null ? replica.points.at(-1) : replica.points.find((p) => p.id === pointId);
    if (!point)
      throw new MamoriError(
        'NOT_FOUND',
        pointId === null
          ? `the replica of ${replica.vmName} has no recovery point yet`
          : `the replica of ${replica.vmName} has no point ${pointId}`,
        { details: { replica: id, pointId } },
      );
    const diskPoints = await this.#recordedDiskPoints(id, point.id);
    const files: string[] = [];
    for (const [i, d] of replica.disks.entries()) {
      const chain = await ReplicaChain.open(join(this.#root, id, `disk${d.index}`));
      files.push(chain.point(diskPoints[i]!).file);
    }
    return { point, files };
  }

  /**
   * The newest point at or before `atMs` a recovery can stand on: a replica point, or a
   * continuous replica's checkpoint (as `journal@TIME`) when one is newer.
   */
  pointIdAt(id: string, atMs: number): Promise<string> {
    return this.#journalPoints.pointIdAt(id, atMs);
  }

  /**
   * Failover: the replica becomes the VM's disks here. Cycles from the source are refused from
   * now on (the source learns it was superseded from that refusal) and the generation rises.
   * Idempotent: promoting a promoted replica returns its generation.
   */
  async promote(id: string): Promise<{ generation: number; promotedAt: string }> {
    return this.#lock.run(id, async () => {
      const r = await this.get(id);
      if (r.promotedAt !== null) return { generation: r.failoverGeneration, promotedAt: r.promotedAt };
      await this.#cycles.close(id);
      await this.#journals.close(id);
      await this.#cycles.release(id);
      await this.#cycles.killLeftover(id);
      const promotedAt = new Date().toISOString();
      await this.#repo.setPromoted(id, promotedAt, r.failoverGeneration + 1);
      return { generation: r.failoverGeneration + 1, promotedAt };
    });
  }

  async abortCycle(id: string): Promise<void> {
    await this.#lock.run(id, () => this.#cycles.close(id));
  }

  /**
   * Runs the write-log verifier on a point; or, with `atUs`, on the continuous replica's disk at
   * that point in time (the journal over its base point, rounded down to a checkpoint).
   */
  async verify(
    id: string,
    pointId?: string,
    atUs?: number,
  ): Promise<{ point: ReplicaPointView; disk: number; report: WriteLogReport }> {
    // Under the replica's lock, as a commit and its retention run: the point read stays put.
    return this.#lock.run(id, () =>
      atUs !== undefined ? this.#journalPoints.verifyAt(id, atUs) : this.#verifyPoint(id, pointId),
    );
  }

  async #verifyPoint(
    id: string,
    pointId: string | undefined,
  ): Promise<{ point: ReplicaPointView; disk: number; report: WriteLogReport }> {
    const replica = await this.get(id);
    const point = pointId ? replica.points.find((p) => p.id === pointId) : replica.points.at(-1);
    if (!point)
      throw new MamoriError(
        'NOT_FOUND',
        pointId ? `replica ${id} has no point ${pointId}` : `replica ${id} has no recovery point yet`,
      );
    const disk = replica.disks[0]!.index;
    const diskPoint = (await this.#recordedDiskPoints(id, point.id))[0]!;
    const chain = await ReplicaChain.open(join(this.#root, id, `disk${disk}`));
    return { point, disk, report: await verifyWriteLog(chain.point(diskPoint).file, { forceShare: true }) };
  }

  /** At server start: bring every replica's chains back in line with its recorded points (ReplicaUpkeep). */
  async repair(): Promise<void> {
    await this.#upkeep.repair();
  }

  /** A point listed in the replica's view is recorded (a row vanishing in between is a bug, as executeTakeFirstOrThrow said). */
  async #recordedDiskPoints(id: string, pointId: string): Promise<string[]> {
    const diskPoints = await this.#repo.diskPointsOf(id, pointId);
    if (diskPoints === undefined)
      throw new MamoriError(
        'NOT_FOUND',
        `replica ${id} has no recorded point ${pointId} (it was dropped by retention meanwhile); try again`,
        { details: { replica: id, pointId } },
      );
    return diskPoints;
  }

  /**
   * Serves a continuous replica at a point in time (`journal@TIME`, rounded down to a checkpoint)
   * to `user`, a VM recovered there (instant recovery): per disk in disk order, the backing name
   * its overlay's header gives. Nothing is copied; the export stays until every user releases it.
   */
  async servePointInTime(
    id: string,
    atMs: number,
    user: string,
    options: { pending?: boolean } = {},
  ): Promise<{ point: ReplicaPointView; backings: BackingRef[] }> {
    return this.#lock.run(id, async () => {
      const replica = await this.get(id);
      const { timeUs, point } = await this.#journalPoints.instantAt(id, atMs);
      const key = { replicaId: id, timeUs };
      await this.#exports.acquire(key, user, options);
      return {
        point,
        backings: replica.disks.map((d) => ({
          file: this.#exports.backingName(key, JournalPointServer.exportName(d.index)),
          format: 'raw',
        })),
      };
    });
  }

  /** The VM `user` that servePointInTime was pending for is on record now. */
  confirmPointInTime(user: string): void {
    this.#exports.confirm(user);
  }

  /** `user` no longer stands on a point in time (its VM went, or moved off it); the last user's export closes. */
  async releasePointInTime(user: string): Promise<void> {
    await this.#exports.release(user);
  }

  /** The VMs on record standing on a point in time served here (not those still being made). */
  pointInTimeUsers(): string[] {
    return this.#exports.users().map((u) => u.user);
  }

  /** Whether an overlay's backing name is one of this site's point-in-time exports. */
  isPointInTimeBacking(backing: string | null): boolean {
    return this.#exports.parseBacking(backing) !== null;
  }

  /** Server shutdown: a cycle in flight is cut; its staging is discarded at the next attempt. */
  async shutdown(): Promise<void> {
    await this.#exports.closeAll();
    await this.#journals.closeAll();
    await this.#cycles.shutdown();
  }
}

export { journalPointId, journalPointTime } from './replica-journal-points.js';

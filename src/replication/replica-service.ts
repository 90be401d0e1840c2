import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
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
import { NbdClient } from '../nbd/nbd-client.js';
import { chunkDigests } from './block-checksums.js';
import type { ByteRange } from '../nbd/extent-copy.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import { writeQemuTlsCreds } from '../sites/qemu-tls-creds.js';
import type { SiteTls } from '../sites/site-tls.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import { freePort } from '../core/free-port.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { faultPoint } from '../core/fault-points.js';
import { verifyWriteLog, type WriteLogReport } from '../guest/writelog-verifier.js';
import type { Logger } from '../core/logger.js';
import { readSeedDelta, type SeedDelta } from './seed-delta.js';

/** A point's files, one per disk in disk order: the top layer a recovered VM's overlay is backed by. */
export interface PointFiles {
  point: ReplicaPointView;
  files: string[];
}

/** A replica as the recovery site's operator sees it. */
export interface ReplicaSummary extends ReplicaView {
  /** receiving: the source replicates into it; promoted: a failover made it a VM's disks; retired: a later reprotect replaced it. */
  state: 'receiving' | 'promoted' | 'retired';
  storage: ReplicaStorage;
  usedBy: ReplicaUsers;
}

export interface CycleTarget {
  cycleId: string;
  host: string;
  port: number;
  /** NBD export name per disk index. */
  exports: string[];
}

interface OpenCycle {
  id: string;
  daemon: StorageDaemon;
  chains: ReplicaChain[];
  /** Each disk's layers below staging (the newest point), for checksums. */
  parents: ChainLayer[][];
  /** Read-only daemon over the parents, started by the first checksum request of a resync. */
  reader: StorageDaemon | null;
}

/**
 * The recovery side of replication: one replica per protected VM, one ReplicaChain per disk.
 * A cycle opens a staging overlay on every disk and serves them writable over NBD with TLS,
 * accepting only the source site's client certificate. A point exists once every disk's
 * chain has committed and the replica_points row is written: that row is the commit of a
 * multi-disk point, so a crash between two disks' commits never shows a half point.
 */
export class ReplicaService {
  #repo: ReplicaRepo;
  #root: string;
  #listenHost: () => string;
  #tls: () => Promise<SiteTls>;
  #log: Logger;
  #lock = new KeyedLock();
  #cycles = new Map<string, OpenCycle>();
  #removal: ReplicaRemoval;

  constructor(deps: {
    db: Kysely<Database>;
    dataDir: string;
    listenHost: () => string;
    tls: () => Promise<SiteTls>;
    log: Logger;
  }) {
    this.#repo = new ReplicaRepo(deps.db);
    this.#root = join(deps.dataDir, 'replicas');
    this.#listenHost = deps.listenHost;
    this.#tls = deps.tls;
    this.#log = deps.log;
    this.#removal = new ReplicaRemoval({ db: deps.db, root: this.#root, log: deps.log });
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
    return { ...view, state, storage: await this.storage(id), usedBy: await this.#removal.usersOf(id) };
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
      await this.#closeCycle(id);
      await this.#killLeftoverDaemon(id);
      await this.#removal.remove(id);
      this.#log.info({ replica: id, vm: replica.vmName, source: replica.sourceSite }, 'replica deleted');
    });
  }

  /** Opens staging on every disk and serves it over NBD+TLS for the source site's client only. */
  async beginCycle(id: string, peer: { name: string; caPem: string }): Promise<CycleTarget> {
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
      await this.#closeCycle(id);
      const dir = join(this.#root, id);
      await this.#killLeftoverDaemon(id);
      const chains = await Promise.all(replica.disks.map((d) => ReplicaChain.open(join(dir, `disk${d.index}`))));
      await this.#withdrawUnrecordedPoints(id, chains);
      const staging = [];
      for (const c of chains) staging.push(await c.beginCycle());
      const site = await this.#tls();
      const tlsDir = await writeQemuTlsCreds({
        dir: join(dir, 'tls'),
        site,
        peerCaPem: peer.caPem,
        endpoint: 'server',
      });
      const host = this.#listenHost();
      const port = await freePort(host);
      const cycleId = newShortId('cyc');
      const exports = replica.disks.map((d) => `disk${d.index}`);
      try {
        const daemon = await StorageDaemon.start({
          ...this.#daemonFiles(id),
          chains: staging.map((s, i) => ({ id: exports[i]!, layers: s.layers })),
          // verify-peer with a CA file holding only this peer's CA (and ours, which QEMU needs to
          // load its own certificate): only the paired site's client certificate gets in.
          nbd: { listen: { type: 'inet', host, port }, tls: { dir: tlsDir, verifyPeer: true } },
          exports: exports.map((name) => ({ id: name, node: name, name, writable: true })),
        });
        this.#cycles.set(id, {
          id: cycleId,
          daemon,
          chains,
          parents: staging.map((st) => st.layers.slice(0, -1)),
          reader: null,
        });
      } catch (e) {
        for (const c of chains) await c.discardCycle().catch(() => undefined);
        throw e;
      }
      return { cycleId, host, port, exports };
    });
  }

  async commitCycle(
    id: string,
    cycleId: string,
    meta: { time: string; consistency: PointConsistency },
  ): Promise<ReplicaPointView> {
    return this.#lock.run(id, async () => {
      const open = this.#cycles.get(id);
      if (!open || open.id !== cycleId)
        throw new MamoriError(
          'VM_INVALID_STATE',
          `cycle ${cycleId} of replica ${id} is not open (it was cut or already ended); start a new one`,
        );
      this.#cycles.delete(id);
      // The writer must be gone before a commit: qemu-img check refuses open images.
      await open.daemon.stop();
      if (open.reader) await open.reader.kill();
      const perDisk = [];
      for (const c of open.chains) perDisk.push((await c.commitCycle(meta)).id);
      const committedAt = new Date().toISOString();
      const pointId = perDisk[0]!;
      await this.#repo.addPoint(id, {
        pointId,
        time: meta.time,
        consistency: meta.consistency,
        committedAt,
        diskPoints: perDisk,
      });
      await this.#retain(id, open.chains);
      // After the answer: absorbing a reprotect's seed reads it whole, longer than a commit may take.
      setImmediate(
        () =>
          void this.#lock
            .run(id, () => this.#compact(id))
            .catch((e: unknown) =>
              this.#log.warn({ replica: id, err: e }, 'compaction failed; the next point tries again'),
            ),
      );
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
   * Digests of a span of one disk's newest point (what staging started from), for a source
   * that lost its dirty bitmap: hashed here, next to the data, so only digests cross the link.
   */
  async checksums(
    id: string,
    cycleId: string,
    input: { disk: number; offset: number; length: number; chunkSize: number },
  ): Promise<Buffer> {
    return this.#lock.run(id, async () => {
      const open = this.#cycles.get(id);
      if (!open || open.id !== cycleId)
        throw new MamoriError(
          'VM_INVALID_STATE',
          `cycle ${cycleId} of replica ${id} is not open (it was cut or already ended); start a new one`,
        );
      const layers = open.parents[input.disk];
      if (layers === undefined)
        throw new MamoriError('OUT_OF_RANGE', `replica ${id} has no disk ${input.disk}`, {
          details: { disk: input.disk },
        });
      if (open.reader === null) {
        const dir = join(this.#root, id);
        open.reader = await StorageDaemon.start({
          ...this.#readerFiles(id),
          chains: open.parents.map((l, i) => ({ id: `point${i}`, layers: l, readOnly: true })),
          nbd: { listen: { type: 'unix', path: join(dir, 'rd-nbd.sock') } },
          exports: open.parents.map((_, i) => ({ id: `point${i}`, node: `point${i}`, name: `point${i}` })),
        });
      }
      const client = await NbdClient.connect(
        { socketPath: join(this.#root, id, 'rd-nbd.sock') },
        { exportName: `point${input.disk}`, metaContexts: ['base:allocation'] },
      );
      try {
        const range: ByteRange = { offset: input.offset, length: input.length };
        return await chunkDigests(client, range, input.chunkSize);
      } finally {
        await client.disconnect().catch(() => undefined);
      }
    });
  }

  /** Reprotect: what the seed's disks wrote after their last point (seed-delta.ts); null if none was recorded. */
  async seedDelta(id: string): Promise<SeedDelta | null> {
    await this.get(id);
    return readSeedDelta(join(this.#root, id));
  }

  /** The files of a point (the newest when pointId is null), for overlays of recovered VMs. */
  async pointFiles(id: string, pointId: string | null): Promise<PointFiles> {
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
   * Failover: the replica becomes the VM's disks here. Cycles from the source are refused from
   * now on (the source learns it was superseded from that refusal) and the generation rises.
   * Idempotent: promoting a promoted replica returns its generation.
   */
  async promote(id: string): Promise<{ generation: number; promotedAt: string }> {
    return this.#lock.run(id, async () => {
      const r = await this.get(id);
      if (r.promotedAt !== null) return { generation: r.failoverGeneration, promotedAt: r.promotedAt };
      await this.#closeCycle(id);
      await this.#killLeftoverDaemon(id);
      const promotedAt = new Date().toISOString();
      await this.#repo.setPromoted(id, promotedAt, r.failoverGeneration + 1);
      return { generation: r.failoverGeneration + 1, promotedAt };
    });
  }

  async abortCycle(id: string): Promise<void> {
    await this.#lock.run(id, () => this.#closeCycle(id));
  }

  /** Runs the write-log verifier on a point, holding it against retention while it reads. */
  async verify(
    id: string,
    pointId?: string,
  ): Promise<{ point: ReplicaPointView; disk: number; report: WriteLogReport }> {
    const replica = await this.get(id);
    const point = pointId ? replica.points.find((p) => p.id === pointId) : replica.points.at(-1);
    if (!point)
      throw new MamoriError(
        'NOT_FOUND',
        pointId ? `replica ${id} has no point ${pointId}` : `replica ${id} has no recovery point yet`,
      );
    const diskPoint = (await this.#recordedDiskPoints(id, point.id))[0]!;
    const chain = await ReplicaChain.open(join(this.#root, id, `disk${replica.disks[0]!.index}`));
    const lease = chain.openPointReadOnly(diskPoint);
    try {
      return {
        point,
        disk: replica.disks[0]!.index,
        report: await verifyWriteLog(lease.point.file, { forceShare: true }),
      };
    } finally {
      lease.release();
    }
  }

  /**
   * At start and before each cycle: a commit cut between two disks (crash, full disk) left
   * the first disks' chains a point ahead of what replica_points records. Those points were
   * never a recovery point of the VM; take them back so every chain ends at the same point.
   */
  async #withdrawUnrecordedPoints(id: string, chains: ReplicaChain[]): Promise<void> {
    const recorded = await this.#repo.allDiskPoints(id);
    for (const [i, chain] of chains.entries()) {
      const listed = new Set(recorded.map((dp) => dp[i]));
      for (let newest = chain.newestPoint(); newest !== null && !listed.has(newest.id); newest = chain.newestPoint()) {
        this.#log.warn(
          { replica: id, disk: i, point: newest.id },
          'withdrawing a disk point whose multi-disk commit was cut',
        );
        await chain.withdrawNewestPoint(newest.id);
      }
    }
  }

  #daemonFiles(id: string): { qmpSocket: string; pidFile: string } {
    const dir = join(this.#root, id);
    return { qmpSocket: join(dir, 'sd-qmp.sock'), pidFile: join(dir, 'sd.pid') };
  }

  #readerFiles(id: string): { qmpSocket: string; pidFile: string } {
    const dir = join(this.#root, id);
    return { qmpSocket: join(dir, 'rd-qmp.sock'), pidFile: join(dir, 'rd.pid') };
  }

  /**
   * A storage daemon outlives a killed site server and keeps the staging image open (and
   * locked); the cycle it served is dead with the server, so it goes, and staging with it.
   */
  async #killLeftoverDaemon(id: string): Promise<void> {
    if (this.#cycles.has(id)) return;
    await StorageDaemon.killLeftover(this.#readerFiles(id));
    if (await StorageDaemon.killLeftover(this.#daemonFiles(id))) {
      this.#log.warn({ replica: id }, 'killed the storage daemon of a cycle cut by a server restart');
    }
  }

  /** At server start: bring every replica's chains back in line with its recorded points. */
  async repair(): Promise<void> {
    await this.#removal
      .repair()
      .catch((e: unknown) =>
        this.#log.error({ err: e }, 'finishing cut replica deletions failed; the next start tries again'),
      );
    for (const r of await this.#repo.disksOfAll()) {
      await this.#lock
        .run(r.id, async () => {
          await this.#killLeftoverDaemon(r.id);
          const disks = r.disks;
          const chains = await Promise.all(
            disks.map((d) => ReplicaChain.open(join(this.#root, r.id, `disk${d.index}`))),
          );
          await this.#withdrawUnrecordedPoints(r.id, chains);
          await this.#releaseSeeds(r.id, disks);
        })
        .catch((e: unknown) =>
          this.#log.error({ replica: r.id, err: e }, 'replica repair failed; the next cycle tries again'),
        );
    }
  }

  /**
   * Compaction: the seed a reprotect left under the chain (the old disk, and through it the
   * chain of an earlier replica and a recovered VM's overlay) is copied into the base once the
   * replica has a point, then released: the retired replica it came from and the superseded
   * VM's files are deleted. So each failover/failback round replaces the previous round's
   * layers instead of stacking on them. Not while a VM runs on a point (its QEMU reads the
   * base) or a cycle is open.
   */
  async #compact(id: string): Promise<void> {
    if (this.#cycles.has(id)) return;
    if (await this.#repo.isHeld(id)) return;
    const replica = await this.get(id).catch(() => null);
    if (!replica || replica.points.length === 0 || replica.promotedAt !== null) return;
    for (const d of replica.disks) {
      const chain = await ReplicaChain.open(join(this.#root, id, `disk${d.index}`));
      const absorbed = await chain.absorbSeed();
      if (absorbed)
        this.#log.info(
          { replica: id, disk: d.index, layers: absorbed.length },
          'absorbed the seed of a reprotect into the base',
        );
    }
    faultPoint('replica-seed-absorbed');
    await this.#releaseSeeds(id, replica.disks);
  }

  /** Deletes what absorbed seeds left (also at start, after a crash between absorb and delete). */
  async #releaseSeeds(id: string, disks: ReplicaDiskSpec[]): Promise<void> {
    const chains = await Promise.all(disks.map((d) => ReplicaChain.open(join(this.#root, id, `disk${d.index}`))));
    const released = chains.flatMap((c) => c.seedLayers().released);
    if (released.length === 0) return;
    // Every disk's chain first: a file still read by one disk's seed is kept (#named sees it).
    await this.#removal.releaseSeed(released, id);
    for (const c of chains) await c.seedReleased();
  }

  async #retain(id: string, chains: ReplicaChain[]): Promise<void> {
    // Recovered VMs run on overlays over a point (test recovery): merging points would
    // rewrite the layers under them, so points pile up until the hold is released.
    if (await this.#repo.isHeld(id)) return;
    const replica = await this.get(id);
    const keep = replica.keepPoints;
    for (const c of chains) await c.applyRetention(keep);
    await this.#repo.keepNewestPoints(id, keep);
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

  async #closeCycle(id: string): Promise<void> {
    const open = this.#cycles.get(id);
    this.#cycles.delete(id);
    if (open) {
      await open.daemon.kill().catch(() => undefined);
      await open.reader?.kill().catch(() => undefined);
      for (const c of open.chains)
        await c
          .discardCycle()
          .catch((e: unknown) => this.#log.warn({ replica: id, err: e }, 'discarding staging failed'));
    }
  }

  /** Server shutdown: a cycle in flight is cut; its staging is discarded at the next attempt. */
  async shutdown(): Promise<void> {
    for (const id of [...this.#cycles.keys()]) await this.#closeCycle(id);
  }
}

import { join } from 'node:path';
import type { ReplicaRepo } from '../store/repos/replica-repo.js';
import type { ReplicaDiskSpec } from '../store/records/replica-record.js';
import { ReplicaChain } from './replica-chain.js';
import type { ReplicaRemoval } from './replica-removal.js';
import type { ReplicaCycleServer } from './replica-cycle-server.js';
import { MamoriError } from '../core/mamori-error.js';
import type { KeyedLock } from '../jobs/keyed-lock.js';
import { faultPoint } from '../core/fault-points.js';
import type { Logger } from '../core/logger.js';

/**
 * Keeps each replica's chains in line with the points replica_points records, and their files
 * from piling up: cut multi-disk commits withdrawn, retention after each point, a reprotect's
 * seed absorbed and released, and all of it again at server start (repair).
 * Shares ReplicaService's per-replica lock: callers of the public methods other than repair
 * hold it already.
 */
export class ReplicaUpkeep {
  #repo: ReplicaRepo;
  #root: string;
  #removal: ReplicaRemoval;
  #cycles: ReplicaCycleServer;
  #lock: KeyedLock;
  #log: Logger;
  #journalBases: (id: string) => Promise<string[]>;

  constructor(deps: {
    repo: ReplicaRepo;
    root: string;
    removal: ReplicaRemoval;
    cycles: ReplicaCycleServer;
    lock: KeyedLock;
    log: Logger;
    /** The points a continuous replica's journal epochs replay over (replica-service.ts's journals). */
    journalBases: (id: string) => Promise<string[]>;
  }) {
    this.#repo = deps.repo;
    this.#root = deps.root;
    this.#removal = deps.removal;
    this.#cycles = deps.cycles;
    this.#lock = deps.lock;
    this.#log = deps.log;
    this.#journalBases = deps.journalBases;
  }

  /** At server start: bring every replica's chains back in line with its recorded points. */
  async repair(): Promise<void> {
    await this.#removal
      .repair()
      .catch((e: unknown) =>
        this.#log.error({ err: e }, 'finishing cut replica deletions failed; the next start tries again'),
      );
    await this.#cycles
      .killStagingLeftover()
      .catch((e: unknown) => this.#log.error({ err: e }, 'could not kill the staging daemon a killed server left'));
    for (const r of await this.#repo.disksOfAll()) {
      await this.#lock
        .run(r.id, async () => {
          await this.#cycles.killLeftover(r.id);
          const disks = r.disks;
          const chains = await Promise.all(
            disks.map((d) => ReplicaChain.open(join(this.#root, r.id, `disk${d.index}`))),
          );
          await this.withdrawUnrecordedPoints(r.id, chains);
          await this.#releaseSeeds(r.id, disks);
        })
        .catch((e: unknown) =>
          this.#log.error({ replica: r.id, err: e }, 'replica repair failed; the next cycle tries again'),
        );
    }
  }

  /**
   * At start and before each cycle: a commit cut between two disks (crash, full disk) left
   * the first disks' chains a point ahead of what replica_points records. Those points were
   * never a recovery point of the VM; take them back so every chain ends at the same point.
   */
  async withdrawUnrecordedPoints(id: string, chains: ReplicaChain[]): Promise<void> {
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

  async retain(id: string, chains: ReplicaChain[]): Promise<void> {
    // Recovered VMs run on overlays over a point (test recovery): merging points would
    // rewrite the layers under them, so points pile up until the hold is released.
    if (await this.#repo.isHeld(id)) return;
    const replica = await this.#repo.get(id);
    if (!replica) throw new MamoriError('NOT_FOUND', `no replica ${id} on this site`);
    const keep = replica.keepPoints;
    // A continuous replica's journal epochs replay over their base points: retention keeps
    // points until none of those would go (they pile up as under a hold, until the oldest
    // epoch leaves the journal's window).
    const kept = new Set(replica.points.slice(-keep).map((p) => p.id));
    const base = (await this.#journalBases(id)).find((b) => !kept.has(b));
    if (base !== undefined) {
      this.#log.info({ replica: id, basePoint: base }, "retention waits: a journal epoch's base point would go");
      return;
    }
    for (const c of chains) await c.applyRetention(keep, this.#cycles.pointMerge);
    await this.#repo.keepNewestPoints(id, keep);
  }

  /** After a commit's answer: absorbing a reprotect's seed reads it whole, longer than a commit may take. */
  compactLater(id: string): void {
    setImmediate(
      () =>
        void this.#lock
          .run(id, () => this.#compact(id))
          .catch((e: unknown) =>
            this.#log.warn({ replica: id, err: e }, 'compaction failed; the next point tries again'),
          ),
    );
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
    if (this.#cycles.isOpen(id)) return;
    if (await this.#repo.isHeld(id)) return;
    const replica = await this.#repo.get(id).catch(() => undefined);
    if (!replica || replica.points.length === 0 || replica.promotedAt !== null) return;
    // Absorbing writes the base, which the staging daemon's reader locks would refuse.
    if (replica.disks.length > 0) await this.#cycles.release(id);
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
}

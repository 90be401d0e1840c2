import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { BackingRef } from '../qemu/qemu-img-write.js';
import { MamoriError } from '../core/mamori-error.js';
import { createQcow2 } from '../qemu/qemu-img-write.js';
import { syncDirectory, syncFile } from '../core/durable-sync.js';
import {
  assertClosedAndSound,
  assertCleanQcow2Header,
  assertNotInUse,
  chainImageSpec,
  rebaseChain,
  type PointMerge,
} from './chain-images.js';
import {
  MANIFEST,
  POINT_RE,
  parseManifest,
  writeManifest,
  type ChainLayer,
  type ManifestPoint,
  type PointConsistency,
  type ReplicaManifest,
} from './replica-manifest.js';

export type { ChainLayer, PointConsistency } from './replica-manifest.js';
export type { PointMerge, PointMergeStep } from './chain-images.js';

/**
 * The replica of one disk on the recovery site: a base qcow2 (the source's virtual size)
 * and recovery points as a chain of qcow2 overlays, oldest first, one per completed cycle.
 *
 *   base.qcow2 <- p000001.qcow2 <- p000002.qcow2 <- ... <- staging-000003.qcow2 (a cycle in flight)
 *
 * A cycle writes into a staging overlay on top of the newest point (served writable over NBD
 * by a storage daemon). It becomes a point only when it completes: the writer closed it
 * (flushed), then the file is renamed to its final name and recorded in manifest.json, which
 * is written to a temp file, fsynced and renamed: the manifest is the commit. A cut cycle
 * leaves a staging file that the next attempt deletes; the points below are never written.
 *
 * The base is never a point: it starts empty, and retention merges the oldest point into it.
 * Layers are opened from the manifest with explicit backing nodes; backing names in headers
 * are kept relative and correct as well, so `qemu-img` on a point file also works.
 */
export interface RecoveryPoint {
  id: string;
  /** The source-side fleecing instant of the cycle. */
  time: string;
  consistency: PointConsistency;
  committedAt: string;
  file: string;
  /** What to open to read this point: base first, this point's overlay last. */
  layers: ChainLayer[];
}

export interface StagingCycle {
  file: string;
  /** The overlay's backing as its header names it: the newest point (or the base), relative. */
  backing: BackingRef;
  /** The newest point's layers plus the staging overlay on top: export the top writable. */
  layers: ChainLayer[];
  parentPointId: string | null;
}

/** A point held open for reading (verifier, test recovery): retention waits for its release. */
export interface PointLease {
  point: RecoveryPoint;
  layers: ChainLayer[];
  /** A `json:` image name for qemu-img (convert, compare, map) with the explicit chain. */
  imageSpec: string;
  release(): void;
}

/** What a chain holds on disk (seed layers outside the folder are counted apart). */
export interface ChainStorage {
  points: number;
  /** Layers a read of the newest point opens: seed + base + points. */
  layers: number;
  /** Bytes allocated on disk by the files in the chain's folder. */
  bytes: number;
  /** Bytes allocated by seed layers (outside the folder, still read through). */
  seedBytes: number;
}

export interface RetentionResult {
  merged: string[];
  /** Nothing merged because a cycle is open or a point is leased. */
  deferred: boolean;
}

const BASE = 'base.qcow2';
const STAGING_RE = /^staging-\d+\.qcow2$/;

/** One object per replica folder in the site server: it serializes the operations on it. */
export class ReplicaChain {
  readonly #dir: string;
  #manifest: ReplicaManifest;
  #staging: StagingCycle | null = null;
  #leases = new Map<string, number>();
  #busy = false;

  private constructor(dir: string, manifest: ReplicaManifest) {
    this.#dir = dir;
    this.#manifest = manifest;
  }

  static async create(dir: string, options: { virtualSize: number; seed?: ChainLayer[] }): Promise<ReplicaChain> {
    const abs = resolve(dir);
    await mkdir(abs, { recursive: true });
    if (await exists(join(abs, MANIFEST))) {
      throw new MamoriError('DISK_EXISTS', `a replica already exists in ${abs}; open it or choose another folder`, {
        details: { dir: abs },
      });
    }
    const seed = options.seed ?? [];
    if (seed.some((l, i) => i > 0 && l.format !== 'qcow2'))
      throw new MamoriError('INVALID_INPUT', 'a raw seed layer can only be the bottom one');
    const top = seed.at(-1);
    // A seeded base is an empty overlay on the seed: it reads as the old disk until cycles write.
    await createQcow2(join(abs, BASE), {
      ...(top ? { backing: { file: top.file, format: top.format } } : {}),
      sizeBytes: options.virtualSize,
    });
    const manifest: ReplicaManifest = {
      format: 'mamori-replica-chain',
      version: 1,
      virtualSize: options.virtualSize,
      ...(seed.length > 0 ? { seed: seed.map((l) => ({ file: resolve(l.file), format: l.format })) } : {}),
      base: BASE,
      nextSeq: 1,
      points: [],
    };
    await writeManifest(abs, manifest);
    return new ReplicaChain(abs, manifest);
  }

  static async open(dir: string): Promise<ReplicaChain> {
    const abs = resolve(dir);
    let text: string;
    try {
      text = await readFile(join(abs, MANIFEST), 'utf8');
    } catch (e) {
      throw new MamoriError('IMAGE_NOT_FOUND', `no replica in ${abs} (manifest.json missing)`, {
        details: { dir: abs },
        cause: e,
      });
    }
    const manifest = parseManifest(text, abs);
    for (const f of [
      ...(manifest.seed ?? []).map((l) => l.file),
      manifest.base,
      ...manifest.points.map((p) => p.file),
    ]) {
      if (!(await exists(resolve(abs, f)))) {
        throw new MamoriError(
          'IMAGE_CORRUPT',
          `replica ${abs} lists ${f}, which is missing; the chain cannot be read`,
          { details: { dir: abs, file: f } },
        );
      }
    }
    return new ReplicaChain(abs, manifest);
  }

  get dir(): string {
    return this.#dir;
  }

  get virtualSize(): number {
    return this.#manifest.virtualSize;
  }

  get staging(): StagingCycle | null {
    return this.#staging;
  }

  /** Oldest first. */
  points(): RecoveryPoint[] {
    return this.#manifest.points.map((_, i) => this.#pointAt(i));
  }

  newestPoint(): RecoveryPoint | null {
    const n = this.#manifest.points.length;
    return n === 0 ? null : this.#pointAt(n - 1);
  }

  point(id: string): RecoveryPoint {
    const i = this.#manifest.points.findIndex((p) => p.id === id);
    if (i < 0)
      throw new MamoriError('NOT_FOUND', `replica ${this.#dir} has no recovery point ${id}`, {
        details: { dir: this.#dir, pointId: id, wanted: 'POINT_NOT_FOUND' },
      });
    return this.#pointAt(i);
  }

  /**
   * Starts a cycle: deletes what cut cycles and interrupted merges left (refusing files some
   * process still holds open), then puts a fresh staging overlay on the newest point.
   */
  async beginCycle(options: { create?: boolean } = {}): Promise<StagingCycle> {
    return this.#exclusive('begin a cycle', async () => {
      if (this.#staging !== null) throw busy(this.#dir, 'a cycle is already open; commit or discard it first');
      await this.#sweep();
      const parent = this.newestPoint();
      const below = parent?.file ?? join(this.#dir, this.#manifest.base);
      const file = join(this.#dir, `staging-${pad(this.#manifest.nextSeq)}.qcow2`);
      const backing: BackingRef = { file: basename(below), format: 'qcow2' };
      // create false: the staging daemon makes the overlay itself (blockdev-create), no qemu-img.
      if (options.create !== false) {
        await createQcow2(file, { backing, sizeBytes: this.virtualSize });
        await syncDirectory(this.#dir);
      }
      const layers: ChainLayer[] = [...(parent?.layers ?? this.#baseLayers()), { file, format: 'qcow2' }];
      this.#staging = { file, backing, layers, parentPointId: parent?.id ?? null };
      return this.#staging;
    });
  }

  /**
   * Makes the open cycle a recovery point. The writer must have closed the staging image
   * (storage daemon stopped with `quit`, which flushes qcow2 metadata): `qemu-img check`
   * without -U refuses an image still open elsewhere.
   */
  async commitCycle(
    meta: { time: string; consistency: PointConsistency },
    options: { closedByDaemon?: boolean } = {},
  ): Promise<RecoveryPoint> {
    return this.#exclusive('commit a cycle', async () => {
      const staging = this.#staging;
      if (staging === null) throw busy(this.#dir, 'no cycle is open');
      // The staging daemon confirmed it closed the overlay (blockdev-del): its header is what
      // is left to check, without a qemu-img process on the cycle's path.
      if (options.closedByDaemon === true) await assertCleanQcow2Header(staging.file);
      else await assertClosedAndSound(staging.file);
      await syncFile(staging.file);
      const seq = this.#manifest.nextSeq;
      const file = `p${pad(seq)}.qcow2`;
      // Until the manifest names it, the renamed file is an orphan the next sweep deletes.
      await rename(staging.file, join(this.#dir, file));
      await syncDirectory(this.#dir);
      const point: ManifestPoint = {
        id: `p${pad(seq)}`,
        seq,
        file,
        time: meta.time,
        consistency: meta.consistency,
        committedAt: new Date().toISOString(),
      };
      const next: ReplicaManifest = { ...this.#manifest, nextSeq: seq + 1, points: [...this.#manifest.points, point] };
      try {
        await writeManifest(this.#dir, next);
      } catch (e) {
        // Not committed (e.g. disk full): put the staging file back so the commit can be retried.
        await rename(join(this.#dir, file), staging.file).catch(() => undefined);
        throw e;
      }
      this.#manifest = next;
      this.#staging = null;
      return this.#pointAt(next.points.length - 1);
    });
  }

  /** Drops the open cycle (its writer must be gone). */
  async discardCycle(): Promise<void> {
    await this.#exclusive('discard a cycle', async () => {
      const staging = this.#staging;
      if (staging === null) return;
      await assertNotInUse(staging.file);
      await rm(staging.file, { force: true });
      await syncDirectory(this.#dir);
      this.#staging = null;
    });
  }

  /**
   * Takes back the newest point: a multi-disk point is committed disk by disk and becomes a
   * point only when the replica records all of them, so a crash between two disks leaves
   * the first disks one point ahead. Nothing is layered on the newest point (no cycle is
   * open), so dropping it leaves exactly the point below. Manifest first (the commit), then
   * the file (an orphan the next sweep deletes if we crash in between).
   */
  async withdrawNewestPoint(pointId: string): Promise<void> {
    await this.#exclusive('withdraw a point', async () => {
      if (this.#staging !== null)
        throw busy(this.#dir, 'a cycle is open; the newest point cannot be withdrawn under it');
      const newest = this.#manifest.points.at(-1);
      if (newest?.id !== pointId) {
        throw new MamoriError(
          'VM_INVALID_STATE',
          `replica ${this.#dir}: ${pointId} is not the newest point, only the newest can be withdrawn`,
          { details: { dir: this.#dir, pointId, newest: newest?.id ?? null } },
        );
      }
      if ((this.#leases.get(pointId) ?? 0) > 0) throw busy(this.#dir, `point ${pointId} is being read`);
      const manifest: ReplicaManifest = { ...this.#manifest, points: this.#manifest.points.slice(0, -1) };
      await writeManifest(this.#dir, manifest);
      this.#manifest = manifest;
      await rm(join(this.#dir, newest.file), { force: true });
      await syncDirectory(this.#dir);
    });
  }

  /** The explicit layer list of a point, held until release(); the chain is not touched. */
  openPointReadOnly(pointId: string): PointLease {
    const point = this.point(pointId);
    this.#leases.set(pointId, (this.#leases.get(pointId) ?? 0) + 1);
    let released = false;
    return {
      point,
      layers: point.layers,
      imageSpec: chainImageSpec(point.layers),
      release: () => {
        if (released) return;
        released = true;
        const n = (this.#leases.get(pointId) ?? 1) - 1;
        if (n <= 0) this.#leases.delete(pointId);
        else this.#leases.set(pointId, n);
      },
    };
  }

  /**
   * Keeps the newest `keep` points by merging the oldest into the base, one at a time.
   * Offline only: deferred while a cycle is open or a point is leased (and qemu-img's image
   * locks refuse if another process has a layer open).
   *
   * Order, so that a crash at any step loses no listed point:
   *  1. `merge` commits the oldest point P into the base (qemu-img commit, or block-commit in
   *     the staging daemon that holds the chain open). Only areas P allocates change in the
   *     base, and P still covers each of them, so P and every later point read the same
   *     before, during and after; a half-done commit is simply redone. (What the base alone
   *     read before is lost, but the base is not a point.)
   *  2. `merge` then rewrites the next point's header onto the base (header only; its data
   *     is unchanged since base now reads as P did). Reads use the manifest's explicit
   *     chain, which still includes P until step 4, and give the same bytes either way.
   *  3. fsync the base and the next point: whoever merged, both are on disk before the commit.
   *  4. Write the manifest without P (the commit of the merge).
   *  5. Delete P's file (an orphan if we crash before: the next sweep removes it).
   */
  async applyRetention(keep: number, merge: PointMerge): Promise<RetentionResult> {
    if (!Number.isSafeInteger(keep) || keep < 1)
      throw new MamoriError('OUT_OF_RANGE', `retention must keep at least 1 point (got ${keep})`, {
        details: { keep },
      });
    return this.#exclusive('apply retention', async () => {
      if (this.#staging !== null || this.#leases.size > 0)
        return { merged: [], deferred: this.#manifest.points.length > keep };
      await this.#sweep();
      const merged: string[] = [];
      while (this.#manifest.points.length > keep) {
        const [oldest, next] = this.#manifest.points;
        if (oldest === undefined || next === undefined) break;
        const base = join(this.#dir, this.#manifest.base);
        const oldestFile = join(this.#dir, oldest.file);
        // A seeded base reads through to its seed: the merge must see the seed too (a commit copies
        // whole clusters, reading what the point leaves unallocated from below), and stop at the
        // base (-b), so the seed itself is never written.
        const seed = this.#manifest.seed ?? [];
        const nextFile = join(this.#dir, next.file);
        const layers: ChainLayer[] = [
          ...seed,
          { file: base, format: 'qcow2' },
          { file: oldestFile, format: 'qcow2' },
          { file: nextFile, format: 'qcow2' },
        ];
        await merge({ dir: this.#dir, layers, baseName: this.#manifest.base });
        await syncFile(base);
        await syncFile(nextFile);
        const manifest: ReplicaManifest = { ...this.#manifest, points: this.#manifest.points.slice(1) };
        await writeManifest(this.#dir, manifest);
        this.#manifest = manifest;
        await rm(oldestFile, { force: true });
        await syncDirectory(this.#dir);
        merged.push(oldest.id);
      }
      return { merged, deferred: false };
    });
  }

  /** The seed layers still read through (empty once absorbed), and those awaiting deletion. */
  seedLayers(): { current: ChainLayer[]; released: ChainLayer[] } {
    return { current: [...(this.#manifest.seed ?? [])], released: [...(this.#manifest.releasedSeed ?? [])] };
  }

  async storage(): Promise<ChainStorage> {
    let bytes = 0;
    for (const name of await readdir(this.#dir)) bytes += await allocated(join(this.#dir, name));
    let seedBytes = 0;
    for (const l of this.#manifest.seed ?? []) seedBytes += await allocated(l.file);
    const points = this.#manifest.points.length;
    return { points, layers: (this.#manifest.seed?.length ?? 0) + 1 + points, bytes, seedBytes };
  }

  /**
   * Compaction after a reprotect: the seed (the old disk, often a whole chain of an earlier
   * replica plus a recovered VM's overlay, one more per failover round) is copied into the
   * base, so the chain stops reading it and it can be deleted. Without this every round
   * stacks its layers under the next replica and chains and storage grow without bound.
   *
   *  1. `qemu-img rebase -b ''` (safe mode) on the base, opened with its explicit chain: it
   *     writes into the base every cluster where the seed reads other than zeros and the base
   *     has nothing, then drops the backing name. The base (and every point over it) reads the
   *     same bytes before, during and after, so a cut rebase is simply redone.
   *  2. Write the manifest without `seed`, listing it as `releasedSeed` (the commit).
   * The owner then deletes the released files it may delete and calls seedReleased().
   * Offline only, like retention: deferred while a cycle is open or a point is leased.
   */
  async absorbSeed(): Promise<ChainLayer[] | null> {
    return this.#exclusive('absorb the seed', async () => {
      const seed = this.#manifest.seed ?? [];
      if (seed.length === 0 || this.#staging !== null || this.#leases.size > 0) return null;
      const base = join(this.#dir, this.#manifest.base);
      await rebaseChain([...seed, { file: base, format: 'qcow2' }], null, base);
      await syncFile(base);
      const { seed: _dropped, ...rest } = this.#manifest;
      const manifest: ReplicaManifest = { ...rest, releasedSeed: [...(this.#manifest.releasedSeed ?? []), ...seed] };
      await writeManifest(this.#dir, manifest);
      this.#manifest = manifest;
      return seed;
    });
  }

  /** The owner deleted (or kept, as still used elsewhere) the released seed layers. */
  async seedReleased(): Promise<void> {
    await this.#exclusive('forget the released seed', async () => {
      if (this.#manifest.releasedSeed === undefined) return;
      const { releasedSeed: _done, ...rest } = this.#manifest;
      await writeManifest(this.#dir, rest);
      this.#manifest = rest;
    });
  }

  #pointAt(i: number): RecoveryPoint {
    const m = this.#manifest;
    const p = m.points[i]!;
    const layers: ChainLayer[] = [
      ...(m.seed ?? []),
      ...[m.base, ...m.points.slice(0, i + 1).map((x) => x.file)].map((f) => ({
        file: join(this.#dir, f),
        format: 'qcow2' as const,
      })),
    ];
    return {
      id: p.id,
      time: p.time,
      consistency: p.consistency,
      committedAt: p.committedAt,
      file: join(this.#dir, p.file),
      layers,
    };
  }

  /** The layers under the first point: the seed (if any) and the base. */
  #baseLayers(): ChainLayer[] {
    return [...(this.#manifest.seed ?? []), { file: join(this.#dir, this.#manifest.base), format: 'qcow2' }];
  }

  /** Deletes staging files of cut cycles, point files the manifest does not list, manifest temps. */
  async #sweep(): Promise<void> {
    const listed = new Set([this.#manifest.base, ...this.#manifest.points.map((p) => p.file)]);
    let removed = false;
    for (const name of await readdir(this.#dir)) {
      const path = join(this.#dir, name);
      if (STAGING_RE.test(name) || (POINT_RE.test(name) && !listed.has(name))) {
        await assertNotInUse(path);
        await rm(path, { force: true });
        removed = true;
      } else if (name.startsWith(`${MANIFEST}.tmp`)) {
        await rm(path, { force: true });
        removed = true;
      }
    }
    if (removed) await syncDirectory(this.#dir);
  }

  async #exclusive<T>(what: string, body: () => Promise<T>): Promise<T> {
    if (this.#busy) throw busy(this.#dir, `cannot ${what} while another operation on it runs`);
    this.#busy = true;
    try {
      return await body();
    } finally {
      this.#busy = false;
    }
  }
}

function busy(dir: string, why: string): MamoriError {
  return new MamoriError('DISK_IN_USE', `replica ${dir}: ${why}`, { details: { dir, wanted: 'REPLICA_BUSY' } });
}

/** Bytes a file takes on disk (holes and unallocated clusters do not count); 0 if gone. */
async function allocated(path: string): Promise<number> {
  return stat(path).then(
    (st) => (st.isFile() ? st.blocks * 512 : 0),
    () => 0,
  );
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function pad(n: number): string {
  return String(n).padStart(6, '0');
}

import { readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { SitePaths } from '../core/site-paths.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import type { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import type { PoolSpec } from '../store/repos/pool-records.js';
import { faultPoint } from '../core/fault-points.js';
import { desktopFiles } from './desktop-clone.js';
import { moveDesktopFiles } from './desktop-move.js';
import { existingParent, shares } from './storage-space.js';

/**
 * Rebalance's moves (View Composer's rebalance): desktops go from the fullest storage pools,
 * and from pools no longer listed, to those with room, until each holds its share by free
 * space. Highest numbers move first. It works out the moves from where the desktops are now,
 * so a run cut half-way and started again does only what is left.
 */
export async function moveDesktops(
  deps: {
    desktops: PoolDesktopRepo;
    paths: SitePaths;
    /** The desktop ready to move (stopped, or powered off when forced), or null (skipped: in use). */
    stopped: (vmId: string, skipped: string[]) => Promise<VmRow | null>;
    progress: (fraction: number) => Promise<void>;
  },
  pool: string,
  spec: PoolSpec,
  replicas: Map<string, { id: string; files: string[] }>,
): Promise<{ moved: string[]; skipped: string[] }> {
  const { desktops, paths } = deps;
  const rows = await desktops.placements(pool);
  const free = await Promise.all(
    spec.storage.map(async (s) => {
      const fs = await statfs(await existingParent(paths.pool(s)));
      return Number(fs.bavail) * Number(fs.bsize);
    }),
  );
  const want = shares(rows.length, free);
  const count = new Map(spec.storage.map((s) => [s, rows.filter((r) => r.storage === s).length]));
  const moved: string[] = [];
  const skipped: string[] = [];
  for (const r of [...rows].reverse()) {
    const here = spec.storage.indexOf(r.storage);
    if (here >= 0 && count.get(r.storage)! <= want[here]!) continue;
    const to = spec.storage.findIndex((s, i) => count.get(s)! < want[i]!);
    if (to < 0) continue;
    const vm = await deps.stopped(r.vmId, skipped);
    if (!vm) continue;
    const target = spec.storage[to]!;
    const replica = replicas.get(target)!;
    const from = desktopFiles(paths.pool(r.storage), pool, vm.name, spec, replica.files.length);
    const dest = desktopFiles(paths.pool(target), pool, vm.name, spec, replica.files.length);
    const renamed = await moveDesktopFiles(from, dest, replica.files);
    // The rows follow the files in one transaction: before it the desktop is where it was
    // (a rerun moves what is left), after it the desktop is where it went.
    await desktops.moved(vm.id, { storage: target, replicaId: replica.id, renamed }, new Date().toISOString());
    faultPoint('pool-desktop-done');
    await rm(from.dir, { recursive: true, force: true });
    if (here >= 0) count.set(r.storage, count.get(r.storage)! - 1);
    count.set(target, count.get(target)! + 1);
    moved.push(`${vm.name}: ${r.storage} -> ${target}`);
    await deps.progress(moved.length / rows.length);
  }
  return { moved, skipped };
}

/**
 * Desktop folders of this pool that no desktop row places there: what a move cut between
 * its rows and its `rm` left behind, or a desktop deleted half-way. Removed, in the storage
 * pools the pool has used.
 */
export async function removeStrayDesktopFolders(
  desktops: PoolDesktopRepo,
  paths: SitePaths,
  pool: string,
  storages: string[],
): Promise<string[]> {
  const rows = await desktops.folders(pool);
  const removed: string[] = [];
  for (const s of new Set(storages)) {
    const dir = join(paths.pool(s), 'desktops', pool);
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      if (rows.some((r) => r.name === n && r.storage === s)) continue;
      await rm(join(dir, n), { recursive: true, force: true });
      removed.push(join(dir, n));
    }
  }
  return removed;
}

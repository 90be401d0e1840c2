import { access, copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { rebaseUnsafe } from '../qemu/qemu-img-write.js';
import { syncDirectory, syncFile } from '../core/durable-sync.js';
import type { DesktopFiles } from './desktop-clone.js';

/**
 * Moves a stopped desktop's files to another storage pool (rebalance): every file goes to
 * the new folder (a rename on the same filesystem, a copy across), and each OS overlay is
 * pointed at the replica there. Both replicas are flattenings of the same snapshot, byte
 * for byte, so the overlay's backing is switched without reading it (qemu-img rebase -u).
 * Returns the new path of each old path; the caller updates the disk rows, then removes
 * the old folder.
 */
export async function moveDesktopFiles(
  from: DesktopFiles,
  to: DesktopFiles,
  replica: string[],
): Promise<Map<string, string>> {
  await mkdir(to.dir, { recursive: true });
  const moved = new Map<string, string>();
  const all = [...from.os, from.persistent, from.disposable, from.identity].filter((f): f is string => f !== null);
  for (const f of all) {
    const dest = join(to.dir, basename(f));
    moved.set(f, dest);
    // Gone from here and there already: a move cut half-way moved it before it stopped.
    if (!(await exists(f)) && (await exists(dest))) continue;
    await rename(f, dest).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EXDEV') throw e;
      // A copy cut half-way is made again: the source stays until the copy is whole.
      await copyFile(f, dest);
      await syncFile(dest);
      await rm(f, { force: true });
    });
  }
  for (const [i, os] of to.os.entries()) {
    await rebaseUnsafe(os, { file: replica[i]!, format: 'qcow2' });
  }
  await syncDirectory(to.dir);
  return moved;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

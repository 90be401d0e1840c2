import { rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { runProcess } from '../core/run-process.js';
import { syncDirectory, syncFile } from '../core/durable-sync.js';

/*
 * Image files shared by hard link. A desktop pool's replica of a master's snapshot is a second
 * name for the master's own layer when that layer is one whole qcow2 on the same filesystem
 * (pools/pool-replica.ts): the snapshot's bytes are then stored once for the master and every
 * pool. Such a layer is immutable while the snapshot exists; the one thing that writes into a
 * snapshot's layer is the snapshot's delete (its overlay is committed down into it), and that
 * must first give the master a copy of its own (unshareFile), or every desktop reading the
 * other name would see its base change under it.
 */

/** How many names the file has (1: its own; more: a hard link shares it). */
export async function linkCount(path: string): Promise<number> {
  return (await stat(path)).nlink;
}

/**
 * Gives `path` a file of its own when another name shares it: the bytes are copied beside it
 * (sparse, reflinked where the filesystem can), synced and renamed over `path`, so the other
 * names keep the old file unchanged and this one can be written. A cut leaves either the
 * shared file or the private copy at `path`, and at worst a `.unshare` file that the next call
 * replaces. A file with one name is left alone.
 */
export async function unshareFile(path: string): Promise<boolean> {
  if ((await linkCount(path)) < 2) return false;
  const tmp = `${path}.unshare`;
  await rm(tmp, { force: true });
  try {
    await runProcess('cp', ['--sparse=always', '--reflink=auto', '--preserve=mode', '--', path, tmp], {
      timeoutMs: 6 * 3600_000,
    });
    await syncFile(tmp);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await syncDirectory(dirname(path));
  return true;
}

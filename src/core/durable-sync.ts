import { open, rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { runProcess } from './run-process.js';

/*
 * fsync(2) for what mamori writes through other programs. qemu-img convert leaves its
 * output unflushed (its default target cache mode is 'unsafe'); asking it for 'writeback'
 * instead makes it flush at every qcow2 metadata update, about 25% slower on these
 * machines than one fsync of the finished file. A file is synced before it is renamed into
 * place, and the folder after, so a power cut never leaves a registered disk half on disk.
 */

/** Flushes a file's data and size to stable storage. */
export function syncFile(path: string): Promise<void> {
  return fsyncOf(path, 'r+');
}

/** Flushes a folder's entries: a rename or a new file in it survives a power cut. */
export function syncDirectory(dir: string): Promise<void> {
  return fsyncOf(dir, 'r');
}

async function fsyncOf(path: string, flags: 'r' | 'r+'): Promise<void> {
  const fh = await open(path, flags);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` with `text` so that a crash leaves the old file or the new one, whole: written
 * to `path.tmp`, fsynced, renamed over, then the folder fsynced.
 */
export async function replaceFileDurably(path: string, text: string, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `${basename(path)}.tmp`);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDirectory(dirname(path));
}

/** syncfs(2) of the filesystem holding `path` (sync -f): one flush for many files written there. */
export async function syncFilesystemOf(path: string): Promise<void> {
  await runProcess('sync', ['-f', path], { timeoutMs: 600_000 });
}

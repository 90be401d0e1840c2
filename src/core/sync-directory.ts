import { open } from 'node:fs/promises';

/**
 * fsync(2) of a directory: makes a rename or a new file in it survive a power cut
 * (the file's own data is flushed separately, by whoever wrote it).
 */
export async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

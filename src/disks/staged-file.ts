import { link, readdir, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { syncDirectory } from '../core/durable-sync.js';

/*
 * How a disk file comes to exist without a race losing one (issue 18). Two requests for one
 * name, or two names for one path, must never have one remove or overwrite the other's file:
 *   1. each request makes its file under a staging name of its own (the disk id is in it);
 *   2. its row is inserted (the database decides the winner of a name);
 *   3. only then is the file put in place with link(2), which fails if the final name exists,
 *      so nothing is ever replaced; the staging name is unlinked after.
 * A loser removes only its own staging file. A server killed between 2 and 3 leaves a row
 * whose file is still at its staging name: repair (at start) finishes step 3; a staging file
 * with no row is removed.
 */

const SUFFIX = '.staging';

export function stagingPath(finalPath: string, ownerId: string): string {
  return join(dirname(finalPath), `.${basename(finalPath)}.${ownerId}${SUFFIX}`);
}

/** Puts a staged file at its final name, never replacing a file there (DISK_EXISTS then). */
export async function placeStaged(staging: string, finalPath: string): Promise<void> {
  try {
    await link(staging, finalPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new MamoriError('DISK_EXISTS', `a file already exists at ${finalPath}; choose another name or path`, {
        details: { path: finalPath },
      });
    }
    throw e;
  }
  await unlink(staging);
  await syncDirectory(dirname(finalPath));
}

export async function discardStaged(staging: string): Promise<void> {
  await rm(staging, { force: true });
}

/** Staging files in a folder, with the owner id their name carries. */
export async function stagedFilesIn(dir: string): Promise<{ path: string; finalPath: string; ownerId: string }[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: { path: string; finalPath: string; ownerId: string }[] = [];
  for (const n of names) {
    if (!n.startsWith('.') || !n.endsWith(SUFFIX)) continue;
    const inner = n.slice(1, -SUFFIX.length);
    const dot = inner.lastIndexOf('.');
    if (dot <= 0) continue;
    out.push({ path: join(dir, n), finalPath: join(dir, inner.slice(0, dot)), ownerId: inner.slice(dot + 1) });
  }
  return out;
}

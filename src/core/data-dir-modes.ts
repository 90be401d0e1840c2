import { stat } from 'node:fs/promises';
import { MamoriError } from './mamori-error.js';

/**
 * The data folder holds the database, the at-rest key, the admin token and the TLS keys.
 * Like ssh with a key file others can read, the server refuses to start on a folder that
 * group or others may enter, or on a secret file they may read, and prints the command that
 * fixes it. (The server's own umask, 077, keeps everything it makes private from then on.)
 */
export async function assertPrivateDataDir(root: string, secretFiles: readonly string[]): Promise<void> {
  const fixes: string[] = [];
  const dir = await modeOf(root);
  if (dir !== null && (dir & 0o077) !== 0) fixes.push(`chmod 700 ${quote(root)}`);
  const files: string[] = [];
  for (const f of secretFiles) {
    const m = await modeOf(f);
    if (m !== null && (m & 0o077) !== 0) files.push(f);
  }
  if (files.length > 0) fixes.push(`chmod 600 ${files.map(quote).join(' ')}`);
  if (fixes.length === 0) return;
  const command = fixes.join(' && ');
  throw new MamoriError(
    'DATA_DIR_UNSAFE',
    `the data folder ${root} ${dir !== null && (dir & 0o077) !== 0 ? `is open to other users (mode ${(dir & 0o777).toString(8)})` : 'holds secret files other users can read'}; it holds this site's database, keys and tokens. Run: ${command}`,
    {
      details: { dataDir: root, command, files },
    },
  );
}

/** The mode of what the path leads to: a data folder may be a symlink (whose own mode is always 777). */
async function modeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).mode;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** A path as a shell word: the message is meant to be pasted. */
function quote(path: string): string {
  return /^[A-Za-z0-9_./@%+=:,-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}

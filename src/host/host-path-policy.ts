import { realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';

/** What `mamori serve --allow-device GLOB --allow-import DIR` configures (see docs/security.md). */
export interface HostPathAllowList {
  /** Globs of device paths (after realpath) an admin may map as RDMs or convert; default: block devices under /dev. */
  devices?: readonly string[];
  /**
   * Folders whose files may be imported, inspected and converted, and where exports may be
   * written (the site's exchange folders); default: none.
   */
  importDirs?: readonly string[];
}

export const DEFAULT_DEVICE_GLOBS: readonly string[] = ['/dev/**'];

/** A host path that passed the policy: always the canonical path, never what the caller typed. */
export interface AllowedHostPath {
  path: string;
  kind: 'block' | 'file' | 'directory' | 'socket';
  /** What identifies the object whatever path names it: the device number for block devices, dev:inode otherwise. */
  identity: string;
}

export type HostPathUse = 'device' | 'image' | 'export-dir' | 'nbd-socket';

/**
 * Host paths that API callers name (RDM devices, images to import, inspect or convert,
 * export folders). Every check runs on the realpath, so `/etc/./shadow`, `//etc/shadow` and
 * a symlink to it are the same file; the site's own data folder is refused whatever the
 * allow-list says (it holds the CA key, the database and every VM's disks); and a path that
 * does not exist gets the very answer a forbidden one gets, so the API tells a caller
 * nothing about which host paths exist.
 */
export class HostPathPolicy {
  readonly #deviceGlobs: RegExp[];
  readonly #deviceGlobText: readonly string[];
  readonly #explicitDeviceGlobs: boolean;
  readonly #importDirs: string[];
  readonly #dataDir: string;
  #dataDirReal: string | null = null;

  constructor(opts: { dataDir: string; allow?: HostPathAllowList }) {
    const devices = opts.allow?.devices?.length ? opts.allow.devices : DEFAULT_DEVICE_GLOBS;
    for (const g of devices)
      if (!isAbsolute(g))
        throw new MamoriError(
          'INVALID_INPUT',
          `--allow-device ${JSON.stringify(g)} must be an absolute glob such as /dev/disk/by-id/*`,
        );
    for (const d of opts.allow?.importDirs ?? [])
      if (!isAbsolute(d))
        throw new MamoriError('INVALID_INPUT', `--allow-import ${JSON.stringify(d)} must be an absolute folder`);
    this.#deviceGlobs = devices.map(globToRegExp);
    this.#deviceGlobText = devices;
    this.#explicitDeviceGlobs = Boolean(opts.allow?.devices?.length);
    this.#importDirs = (opts.allow?.importDirs ?? []).map((d) => resolve(d));
    this.#dataDir = resolve(opts.dataDir);
  }

  /** The allow-list as configured, for `host info` and error messages. */
  describe(): { devices: string[]; importDirs: string[] } {
    return { devices: [...this.#deviceGlobText], importDirs: [...this.#importDirs] };
  }

  /**
   * An RDM device or a disk to convert: a block device matching --allow-device, or a regular
   * file matching an explicit --allow-device glob or inside an import folder.
   */
  device(path: unknown): Promise<AllowedHostPath> {
    return this.#check(path, 'device');
  }

  /** An image (or a block device) to import, inspect or convert. */
  image(path: unknown): Promise<AllowedHostPath> {
    return this.#check(path, 'image');
  }

  /**
   * The unix socket of an NBD server to read a disk from (nbd+unix://): a socket inside an
   * import folder. Connecting to a socket is reading whatever serves it, so it is judged as
   * a host path: never the site's own daemons in its data folder, only what an admin put
   * in an exchange folder (--allow-import).
   */
  nbdSocket(path: unknown): Promise<AllowedHostPath> {
    return this.#check(path, 'nbd-socket');
  }

  /** A folder to export into: an import folder or one below it. */
  exportDir(path: unknown): Promise<AllowedHostPath> {
    return this.#check(path, 'export-dir');
  }

  async #check(given: unknown, use: HostPathUse): Promise<AllowedHostPath> {
    if (typeof given !== 'string' || !isAbsolute(given) || given.includes('\0') || given.length > 4096)
      throw refused(given, use);
    let real: string;
    let st: Stats;
    try {
      real = await realpath(given);
      st = await stat(real);
    } catch {
      // An export may make its folder, one level below an existing allowed one.
      const parent = use === 'export-dir' ? await realpath(dirname(given)).catch(() => null) : null;
      const name = basename(given);
      if (!parent || name === '' || name === '.' || name === '..') throw refused(given, use);
      real = join(parent, name);
      st = await stat(parent).catch(() => {
        throw refused(given, use);
      });
    }
    const dataDir = await this.#dataDirCanonical();
    if (inside(dataDir, real)) throw refused(given, use);
    const underImport = this.#importDirs.some((d) => inside(d, real) && real !== d);
    const matchesDevice = this.#deviceGlobs.some((g) => g.test(real));
    let ok: boolean;
    if (use === 'export-dir') ok = st.isDirectory() && this.#importDirs.some((d) => inside(d, real));
    else if (use === 'nbd-socket') ok = st.isSocket() && underImport;
    else if (st.isBlockDevice()) ok = matchesDevice;
    else if (st.isFile()) ok = underImport || (this.#explicitDeviceGlobs && matchesDevice);
    else ok = false;
    if (!ok) throw refused(given, use);
    const kind = st.isBlockDevice() ? 'block' : st.isDirectory() ? 'directory' : st.isSocket() ? 'socket' : 'file';
    return { path: real, kind, identity: identityOf(st) };
  }

  async #dataDirCanonical(): Promise<string> {
    // The data folder exists while the site runs; cache its realpath (it may itself be a symlink).
    this.#dataDirReal ??= await realpath(this.#dataDir).catch(() => this.#dataDir);
    return this.#dataDirReal;
  }
}

/** The same object, whatever path names it (two device nodes of one disk share the device number). */
export async function hostPathIdentity(path: string): Promise<string | null> {
  try {
    return identityOf(await stat(path));
  } catch {
    return null;
  }
}

function identityOf(st: Stats): string {
  return st.isBlockDevice() ? `blk:${st.rdev}` : `ino:${st.dev}:${st.ino}`;
}

function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel) && !rel.startsWith(`..${sep}`));
}

/** `*` matches within one path segment, `**` across segments, `?` one character; nothing else is special. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i += 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function refused(given: unknown, use: HostPathUse): MamoriError {
  const shown =
    typeof given === 'string' ? JSON.stringify(given.length > 200 ? `${given.slice(0, 200)}…` : given) : 'the path';
  const what =
    use === 'device'
      ? 'a device this site may map'
      : use === 'image'
        ? 'an image or device this site may read'
        : use === 'nbd-socket'
          ? 'an NBD server socket this site may read from'
          : 'a folder this site may export into';
  // One answer for missing and forbidden alike: the API must not tell which host paths exist.
  return new MamoriError(
    'HOST_PATH_REFUSED',
    `${shown} is not ${what}: it does not exist, or it is outside the site's allow-list (mamori serve --allow-device GLOB, --allow-import DIR), or it is inside the site's data folder`,
    { details: { use } },
  );
}

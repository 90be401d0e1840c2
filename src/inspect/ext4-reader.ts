import type { ByteReader } from './byte-reader.js';
import { Ext4BlockDevice } from './ext4-block-device.js';
import { Ext4Directories } from './ext4-directories.js';
import { damaged, unreadable } from './ext4-errors.js';
import { Ext4FileData } from './ext4-file-data.js';
import {
  I_BLOCK_SIZE,
  INODE_FLAG_HUGE_FILE,
  INODE_FLAG_INLINE_DATA,
  inodeType,
  type Ext4EntryType,
  type Inode,
} from './ext4-inode.js';
import { Ext4InodeTable } from './ext4-inode-table.js';
import {
  RO_COMPAT_HUGE_FILE,
  ROOT_INODE,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
  decodeGeometry,
  geometryProblem,
  type Ext4Info,
  type Geometry,
} from './ext4-superblock.js';

// The superblock check and the entry type live with the code that defines them; callers import them from here.
export { parseExt4Superblock } from './ext4-superblock.js';
export type { Ext4Info } from './ext4-superblock.js';
export type { Ext4EntryType } from './ext4-inode.js';

/**
 * A read-only ext2/ext3/ext4 reader for the disk inspector. It answers "what is in
 * /etc/os-release" and "what is in /boot" by following only the metadata on the way there:
 * superblock, the one group descriptor block and inode table block per inode, the directory
 * blocks of each folder on the path, and the file's own blocks. It never scans bitmaps or
 * whole groups, so it costs the same on a 16 MiB and a 16 TiB filesystem.
 *
 * Every number taken from disk is checked before it is used as an offset, a length or a loop
 * bound; a damaged structure raises FILESYSTEM_UNREADABLE naming the structure and where it is.
 * The journal is not replayed: a filesystem marked needs_recovery is read as it stands on disk.
 *
 * This file holds the public API and path resolution (including symlinks); the on-disk
 * structures are read by ext4-superblock, ext4-inode-table, ext4-file-data and ext4-directories.
 */

const MAX_SYMLINK_HOPS = 16;
const MAX_SYMLINK_TARGET = 4096;
const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;

function splitPath(path: string): string[] {
  return path.split('/').filter((part) => part.length > 0);
}

export class Ext4Reader {
  readonly info: Ext4Info;
  readonly #geo: Geometry;
  readonly #inodes: Ext4InodeTable;
  readonly #fileData: Ext4FileData;
  readonly #directories: Ext4Directories;

  private constructor(reader: ByteReader, geo: Geometry) {
    this.#geo = geo;
    this.info = geo.info;
    // One block device, so inode lookups and extent walks share the metadata block cache.
    const blocks = new Ext4BlockDevice(reader, geo);
    this.#inodes = new Ext4InodeTable(geo, blocks);
    this.#fileData = new Ext4FileData(geo, blocks);
    this.#directories = new Ext4Directories(geo, this.#fileData);
  }

  /** Throws FILESYSTEM_UNREADABLE when the partition holds no usable ext2/3/4 filesystem. */
  static async open(reader: ByteReader): Promise<Ext4Reader> {
    if (reader.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) {
      throw unreadable(
        `the partition is ${reader.size} bytes, too small to hold an ext2/3/4 superblock at byte ${SUPERBLOCK_OFFSET}`,
      );
    }
    const sb = await reader.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
    const geo = decodeGeometry(sb);
    if (geo === null) {
      throw unreadable(
        `no ext2/3/4 superblock: magic 0xEF53 missing at byte ${SUPERBLOCK_OFFSET + 0x38} (or block size field invalid) — this partition holds some other filesystem or none`,
      );
    }
    const problem = geometryProblem(geo);
    if (problem !== null) throw damaged(problem);
    const fs = new Ext4Reader(reader, geo);
    const root = await fs.#inodes.readInode(ROOT_INODE);
    if (inodeType(root.mode) !== 'dir')
      throw damaged(`the root inode 2 at byte ${root.offset} is not a directory (mode 0o${root.mode.toString(8)})`);
    return fs;
  }

  /** The file's bytes; follows symlinks. null when the path does not exist or is not a regular file. Larger than maxBytes (default 1 MiB) throws FILESYSTEM_UNREADABLE. */
  async readFile(path: string, opts: { maxBytes?: number } = {}): Promise<Buffer | null> {
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    const inode = await this.#resolve(path, true);
    if (inode === null || inodeType(inode.mode) !== 'file') return null;
    if (inode.size > maxBytes) {
      throw unreadable(
        `${path} (inode ${inode.number}) is ${inode.size} bytes, more than the ${maxBytes}-byte limit for files the inspector reads`,
      );
    }
    return this.#fileData.readContent(inode, inode.size);
  }

  /** Entry names of a directory (without '.' and '..'), sorted; null when it does not exist or is not a directory. Follows symlinks. */
  async listDir(path: string): Promise<{ name: string; type: Ext4EntryType }[] | null> {
    const dir = await this.#resolve(path, true);
    if (dir === null || inodeType(dir.mode) !== 'dir') return null;
    const entries = await this.#directories.entries(dir);
    const listed: { name: string; type: Ext4EntryType }[] = [];
    for (const entry of entries) {
      if (entry.name === '.' || entry.name === '..') continue;
      const type = entry.type ?? inodeType((await this.#inodes.readInode(entry.inode)).mode);
      listed.push({ name: entry.name, type });
    }
    return listed.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** What a path is, without following a final symlink (unless the path ends in '/'); null when absent. */
  async stat(path: string): Promise<{ type: Ext4EntryType; size: number } | null> {
    const inode = await this.#resolve(path, false);
    if (inode === null) return null;
    return { type: inodeType(inode.mode), size: inode.size };
  }

  // -------------------------------------------------------------------------------------------
  // Path resolution

  /**
   * Walks from the root. '..' steps back along the folders walked (the same as the on-disk '..'
   * entry on an undamaged filesystem, without a read). A trailing '/' demands a directory and
   * so follows a final symlink, as POSIX does.
   */
  async #resolve(path: string, followFinal: boolean): Promise<Inode | null> {
    const root = await this.#inodes.readInode(ROOT_INODE);
    const wantsDirectory = path.endsWith('/');
    const follow = followFinal || wantsDirectory;
    let pending = splitPath(path);
    let current = root;
    let parents: Inode[] = [];
    let hops = 0;
    while (pending.length > 0) {
      const [name, ...rest] = pending;
      pending = rest;
      if (name === undefined || name === '.') continue;
      if (name === '..') {
        current = parents.pop() ?? root;
        continue;
      }
      if (inodeType(current.mode) !== 'dir') return null;
      const entry = (await this.#directories.entries(current)).find((e) => e.name === name);
      if (entry === undefined) return null;
      const child = await this.#inodes.readInode(entry.inode);
      const isLast = pending.length === 0;
      if (inodeType(child.mode) === 'symlink' && (!isLast || follow)) {
        hops++;
        if (hops > MAX_SYMLINK_HOPS)
          throw unreadable(`more than ${MAX_SYMLINK_HOPS} symbolic links while resolving ${path} (a symlink loop?)`);
        const target = await this.#symlinkTarget(child);
        if (target.length === 0) return null;
        if (target.startsWith('/')) {
          current = root;
          parents = [];
        }
        pending = [...splitPath(target), ...pending];
        continue;
      }
      parents.push(current);
      current = child;
    }
    if (wantsDirectory && inodeType(current.mode) !== 'dir') return null;
    return current;
  }

  async #symlinkTarget(link: Inode): Promise<string> {
    if (link.size > MAX_SYMLINK_TARGET) {
      throw damaged(
        `symlink inode ${link.number} at byte ${link.offset} claims a ${link.size}-byte target (at most ${MAX_SYMLINK_TARGET})`,
      );
    }
    const bytes = this.#isFastSymlink(link)
      ? link.iBlock.subarray(0, link.size)
      : await this.#fileData.readContent(link, link.size);
    return bytes.toString('utf8');
  }

  /** Short targets live in i_block itself; the kernel tells them apart by the inode owning no data blocks. */
  #isFastSymlink(link: Inode): boolean {
    if ((link.flags & INODE_FLAG_INLINE_DATA) !== 0 || link.size >= I_BLOCK_SIZE) return false;
    const unitsPerCluster =
      (link.flags & INODE_FLAG_HUGE_FILE) !== 0 && (this.#geo.roCompat & RO_COMPAT_HUGE_FILE) !== 0
        ? this.#geo.clusterSize / this.#geo.blockSize
        : this.#geo.clusterSize / 512;
    const xattrBlockUnits = link.fileAcl !== 0 ? unitsPerCluster : 0;
    return link.blockUnits - xattrBlockUnits <= 0;
  }
}

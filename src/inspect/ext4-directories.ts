import { damaged, unreadable } from './ext4-errors.js';
import type { Ext4FileData } from './ext4-file-data.js';
import {
  INODE_FLAG_ENCRYPT,
  INODE_FLAG_INLINE_DATA,
  XATTR_INDEX_SYSTEM,
  inodeXattr,
  type Ext4EntryType,
  type Inode,
} from './ext4-inode.js';
import { LruCache } from './ext4-lru-cache.js';
import { INCOMPAT_FILETYPE, type Geometry } from './ext4-superblock.js';

/**
 * The entries of ext directories, block-based or inline, parsed once and cached by inode number
 * because every path lookup walks the same few folders (/, /etc, /boot).
 */

// On-disk constants (ext4 disk layout documentation; offsets are within their structure).

/** The first 4 bytes of an inline directory hold the parent's inode number, not a dirent. */
const INLINE_DIR_PARENT_SIZE = 4;

const DIRENT_HEADER_SIZE = 8;
const FILE_TYPE_NAMES: Record<number, Ext4EntryType> = {
  1: 'file',
  2: 'dir',
  3: 'other',
  4: 'other',
  5: 'other',
  6: 'other',
  7: 'symlink',
};

/** Folders we walk are small (/, /etc, /boot, /usr/lib); this only stops a damaged size from costing gigabytes. */
const MAX_DIRECTORY_BYTES = 64 * 1024 * 1024;

const DIRECTORY_CACHE_ENTRIES = 32;

export interface DirEntry {
  name: string;
  inode: number;
  /** From the dirent's file type byte; null when the filesystem lacks it or it says "unknown". */
  type: Ext4EntryType | null;
}

/** Decoded ext4 rec_len: only 64 KiB blocks need more than 16 bits, and borrow the (otherwise zero) low two bits. */
function decodeRecLen(raw: number, blockSize: number): number {
  if (blockSize < 65536) return raw;
  if (raw === 0 || raw === 65535) return 65536;
  return (raw & 0xfffc) | ((raw & 3) << 16);
}

function isAllZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

export class Ext4Directories {
  readonly #geo: Geometry;
  readonly #fileData: Ext4FileData;
  readonly #directoryCache = new LruCache<number, Promise<DirEntry[]>>(DIRECTORY_CACHE_ENTRIES);

  constructor(geo: Geometry, fileData: Ext4FileData) {
    this.#geo = geo;
    this.#fileData = fileData;
  }

  entries(dir: Inode): Promise<DirEntry[]> {
    const cached = this.#directoryCache.get(dir.number);
    if (cached !== undefined) return cached;
    const pending = this.#loadDirectory(dir);
    this.#directoryCache.set(dir.number, pending);
    pending.catch(() => this.#directoryCache.delete(dir.number));
    return pending;
  }

  /**
   * Every block scanned in order. htree (dir_index) folders need no special case: their index
   * blocks look like one empty entry spanning the block (or, in block 0, like '..' whose record
   * covers the index), and their leaves hold ordinary entries.
   */
  async #loadDirectory(dir: Inode): Promise<DirEntry[]> {
    const where = `directory inode ${dir.number} (byte ${dir.offset})`;
    if ((dir.flags & INODE_FLAG_ENCRYPT) !== 0)
      throw unreadable(`${where} is encrypted (fscrypt); its names cannot be read without the owner's key`);
    if ((dir.flags & INODE_FLAG_INLINE_DATA) !== 0) return this.#loadInlineDirectory(dir, where);
    const { blockSize } = this.#geo;
    if (dir.size > MAX_DIRECTORY_BYTES)
      throw damaged(`${where} claims ${dir.size} bytes, more than the ${MAX_DIRECTORY_BYTES}-byte limit for a folder`);
    if (dir.size % blockSize !== 0)
      throw damaged(`${where} has size ${dir.size}, not a multiple of the ${blockSize}-byte block size`);
    const content = await this.#fileData.readContent(dir, dir.size);
    const entries: DirEntry[] = [];
    for (let at = 0; at < content.length; at += blockSize) {
      const block = content.subarray(at, at + blockSize);
      if (isAllZero(block)) continue; // a hole: the kernel skips these too
      this.#parseDirentArea(block, `${where}, logical block ${at / blockSize}`, entries);
    }
    return entries;
  }

  /** i_block starts with the parent's inode number, then entries; more entries may follow in system.data. */
  #loadInlineDirectory(dir: Inode, where: string): DirEntry[] {
    const parent = dir.iBlock.readUInt32LE(0);
    const entries: DirEntry[] = [{ name: '..', inode: parent, type: 'dir' }];
    this.#parseDirentArea(dir.iBlock.subarray(INLINE_DIR_PARENT_SIZE), `${where}, inline entries`, entries);
    const continuation = inodeXattr(dir, XATTR_INDEX_SYSTEM, 'data');
    if (continuation !== null && continuation.length > 0)
      this.#parseDirentArea(continuation, `${where}, inline entries in system.data`, entries);
    return entries;
  }

  #parseDirentArea(area: Buffer, where: string, entries: DirEntry[]): void {
    const hasFileType = (this.#geo.incompat & INCOMPAT_FILETYPE) !== 0;
    let at = 0;
    while (at < area.length) {
      if (at + DIRENT_HEADER_SIZE > area.length)
        throw damaged(`${where}: directory entry at offset ${at} runs past the end of the block`);
      const inode = area.readUInt32LE(at);
      const recLen = decodeRecLen(area.readUInt16LE(at + 4), this.#geo.blockSize);
      const nameLen = hasFileType ? area.readUInt8(at + 6) : area.readUInt16LE(at + 6);
      if (
        recLen < DIRENT_HEADER_SIZE ||
        recLen % 4 !== 0 ||
        at + recLen > area.length ||
        DIRENT_HEADER_SIZE + nameLen > recLen
      ) {
        throw damaged(
          `${where}: directory entry at offset ${at} has record length ${recLen} and name length ${nameLen}, which do not fit`,
        );
      }
      // inode 0 marks free space, htree index blocks and the metadata_csum tail.
      if (inode !== 0 && nameLen > 0) {
        const name = area.toString('utf8', at + DIRENT_HEADER_SIZE, at + DIRENT_HEADER_SIZE + nameLen);
        const typeByte = hasFileType ? area.readUInt8(at + 7) & 0x0f : 0;
        entries.push({ name, inode, type: FILE_TYPE_NAMES[typeByte] ?? null });
      }
      at += recLen;
    }
  }
}

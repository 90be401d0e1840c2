import type { ByteReader } from './byte-reader.js';
import { MamoriError } from '../core/mamori-error.js';

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
 */

export interface Ext4Info {
  /** 'ext2' | 'ext3' | 'ext4' as libblkid would name it: ext4 if any ext4-only feature (extents, flex_bg, 64bit, huge_file, dir_nlink, extra_isize, metadata_csum, ...) is set; ext3 if it has a journal (has_journal) and nothing ext4-only; else ext2. */
  type: 'ext2' | 'ext3' | 'ext4';
  /** s_volume_name, trailing NULs stripped. */
  label: string;
  /** s_uuid as lower-case 8-4-4-4-12. */
  uuid: string;
  blockSize: number;
  /** 64-bit aware. */
  blocksCount: number;
  /** Feature flag names set, as e2fsprogs names them, sorted. Unknown bits as 'compat_0x..', 'incompat_0x..', 'ro_compat_0x..'. */
  features: string[];
}

export type Ext4EntryType = 'file' | 'dir' | 'symlink' | 'other';

// ---------------------------------------------------------------------------------------------
// On-disk constants (ext4 disk layout documentation; offsets are within their structure).

const SUPERBLOCK_OFFSET = 1024;
const SUPERBLOCK_SIZE = 1024;
const EXT_MAGIC = 0xef53;
const ROOT_INODE = 2;
const GOOD_OLD_INODE_SIZE = 128;
const MAX_LOG_BLOCK_SIZE = 6; // 64 KiB blocks, the largest any ext version defines

const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_64BIT = 0x80;
const RO_COMPAT_SPARSE_SUPER = 0x1;
const RO_COMPAT_LARGE_FILE = 0x2;
const RO_COMPAT_BTREE_DIR = 0x4;
const RO_COMPAT_HUGE_FILE = 0x8;
const RO_COMPAT_BIGALLOC = 0x200;
const COMPAT_SPARSE_SUPER2 = 0x200;

/** Bits libblkid accepts for ext3 (and ext2); anything else makes the filesystem ext4. */
const EXT3_INCOMPAT_BITS = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
const EXT3_RO_COMPAT_BITS = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

/** e2fsprogs' names (lib/e2p), as dumpe2fs prints them, by bit number. */
const COMPAT_NAMES: Record<number, string> = {
  0: 'dir_prealloc', 1: 'imagic_inodes', 2: 'has_journal', 3: 'ext_attr', 4: 'resize_inode', 5: 'dir_index',
  6: 'lazy_bg', 8: 'snapshot_bitmap', 9: 'sparse_super2', 10: 'fast_commit', 11: 'stable_inodes', 12: 'orphan_file',
};
const INCOMPAT_NAMES: Record<number, string> = {
  0: 'compression', 1: 'filetype', 2: 'needs_recovery', 3: 'journal_dev', 4: 'meta_bg', 6: 'extent', 7: '64bit',
  8: 'mmp', 9: 'flex_bg', 10: 'ea_inode', 12: 'dirdata', 13: 'metadata_csum_seed', 14: 'large_dir', 15: 'inline_data',
  16: 'encrypt', 17: 'casefold',
};
const RO_COMPAT_NAMES: Record<number, string> = {
  0: 'sparse_super', 1: 'large_file', 3: 'huge_file', 4: 'uninit_bg', 5: 'dir_nlink', 6: 'extra_isize', 8: 'quota',
  9: 'bigalloc', 10: 'metadata_csum', 11: 'replica', 12: 'read-only', 13: 'project', 14: 'shared_blocks', 15: 'verity',
  16: 'orphan_present',
};

const S_IFMT = 0xf000;
const S_IFREG = 0x8000;
const S_IFDIR = 0x4000;
const S_IFLNK = 0xa000;

const INODE_FLAG_ENCRYPT = 0x800;
const INODE_FLAG_HUGE_FILE = 0x40000;
const INODE_FLAG_EXTENTS = 0x80000;
const INODE_FLAG_INLINE_DATA = 0x10000000;

/** i_block: 15 32-bit words holding block pointers, the extent tree root, inline data or a short symlink target. */
const I_BLOCK_OFFSET = 0x28;
const I_BLOCK_SIZE = 60;
const DIRECT_BLOCKS = 12;

const EXTENT_MAGIC = 0xf30a;
const EXTENT_ENTRY_SIZE = 12;
const MAX_EXTENT_DEPTH = 5;
/** ee_len above this marks an allocated-but-unwritten extent, which reads as zeros. */
const EXTENT_INIT_MAX_LEN = 32768;
/** A sane tree for a file we are allowed to read has far fewer nodes; more means a damaged (or hostile) tree. */
const MAX_EXTENT_NODES = 10_000;

const XATTR_IBODY_MAGIC = 0xea020000;
const XATTR_INDEX_SYSTEM = 7;
/** The first 4 bytes of an inline directory hold the parent's inode number, not a dirent. */
const INLINE_DIR_PARENT_SIZE = 4;

const DIRENT_HEADER_SIZE = 8;
const FILE_TYPE_NAMES: Record<number, Ext4EntryType> = { 1: 'file', 2: 'dir', 3: 'other', 4: 'other', 5: 'other', 6: 'other', 7: 'symlink' };

const MAX_SYMLINK_HOPS = 16;
const MAX_SYMLINK_TARGET = 4096;
const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;
/** Folders we walk are small (/, /etc, /boot, /usr/lib); this only stops a damaged size from costing gigabytes. */
const MAX_DIRECTORY_BYTES = 64 * 1024 * 1024;
/** One read per contiguous run, but split so a single request never gets huge. */
const MAX_READ_BYTES = 4 * 1024 * 1024;

const BLOCK_CACHE_ENTRIES = 256;
const DIRECTORY_CACHE_ENTRIES = 32;

// ---------------------------------------------------------------------------------------------
// Superblock

/** Everything the reader needs from the superblock, beyond what Ext4Info reports. */
interface Geometry {
  info: Ext4Info;
  blockSize: number;
  blocksCount: number;
  firstDataBlock: number;
  blocksPerGroup: number;
  inodesCount: number;
  inodesPerGroup: number;
  inodeSize: number;
  descriptorSize: number;
  clusterSize: number;
  compat: number;
  incompat: number;
  roCompat: number;
  firstMetaBg: number;
  backupGroups: [number, number];
}

function decodeFeatures(compat: number, incompat: number, roCompat: number): string[] {
  const names: string[] = [];
  const collect = (mask: number, table: Record<number, string>, prefix: string): void => {
    for (let bit = 0; bit < 32; bit++) {
      const value = (mask >>> bit) & 1;
      if (value === 0) continue;
      names.push(table[bit] ?? `${prefix}_0x${(2 ** bit).toString(16)}`);
    }
  };
  collect(compat, COMPAT_NAMES, 'compat');
  collect(incompat, INCOMPAT_NAMES, 'incompat');
  collect(roCompat, RO_COMPAT_NAMES, 'ro_compat');
  return names.sort();
}

function classifyExtVersion(compat: number, incompat: number, roCompat: number): Ext4Info['type'] {
  const hasExt4OnlyFeature = (incompat & ~EXT3_INCOMPAT_BITS) !== 0 || (roCompat & ~EXT3_RO_COMPAT_BITS) !== 0;
  if (hasExt4OnlyFeature) return 'ext4';
  return (compat & COMPAT_HAS_JOURNAL) !== 0 ? 'ext3' : 'ext2';
}

function formatUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

function decodeLabel(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('utf8');
}

function decodeGeometry(sb: Buffer): Geometry | null {
  if (sb.length < SUPERBLOCK_SIZE || sb.readUInt16LE(0x38) !== EXT_MAGIC) return null;
  const logBlockSize = sb.readUInt32LE(0x18);
  if (logBlockSize > MAX_LOG_BLOCK_SIZE) return null;
  const blockSize = 1024 << logBlockSize;
  const compat = sb.readUInt32LE(0x5c);
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);
  const is64bit = (incompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.readUInt32LE(0x04) + (is64bit ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const revLevel = sb.readUInt32LE(0x4c);
  const logClusterSize = sb.readUInt32LE(0x1c);
  const bigalloc = (roCompat & RO_COMPAT_BIGALLOC) !== 0;
  const info: Ext4Info = {
    type: classifyExtVersion(compat, incompat, roCompat),
    label: decodeLabel(sb.subarray(0x78, 0x88)),
    uuid: formatUuid(sb.subarray(0x68, 0x78)),
    blockSize,
    blocksCount,
    features: decodeFeatures(compat, incompat, roCompat),
  };
  return {
    info,
    blockSize,
    blocksCount,
    firstDataBlock: sb.readUInt32LE(0x14),
    blocksPerGroup: sb.readUInt32LE(0x20),
    inodesCount: sb.readUInt32LE(0x00),
    inodesPerGroup: sb.readUInt32LE(0x28),
    inodeSize: revLevel === 0 ? GOOD_OLD_INODE_SIZE : sb.readUInt16LE(0x58),
    descriptorSize: is64bit ? sb.readUInt16LE(0xfe) : 32,
    clusterSize: bigalloc && logClusterSize <= 16 + MAX_LOG_BLOCK_SIZE ? 1024 * 2 ** logClusterSize : blockSize,
    compat,
    incompat,
    roCompat,
    firstMetaBg: sb.readUInt32LE(0x104),
    backupGroups: [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)],
  };
}

/** Just the superblock check, from bytes at partition offset 1024 (1024 bytes). null when the magic 0xEF53 at byte 56 of the superblock is absent (or the block size field is impossible). */
export function parseExt4Superblock(sb: Buffer): Ext4Info | null {
  return decodeGeometry(sb)?.info ?? null;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Why this superblock cannot be used to find inodes, or null when it can. */
function geometryProblem(g: Geometry): string | null {
  const at = `the superblock at byte ${SUPERBLOCK_OFFSET}`;
  if ((g.incompat & INCOMPAT_JOURNAL_DEV) !== 0) return `${at} describes an external ext3/ext4 journal device, not a filesystem with files`;
  if (g.blocksCount === 0 || g.blocksCount <= g.firstDataBlock) return `${at} has an impossible block count ${g.blocksCount}`;
  // One bitmap block covers a group; with bigalloc each bit stands for a cluster.
  const maxBlocksPerGroup = g.blockSize * 8 * (g.clusterSize / g.blockSize);
  if (g.blocksPerGroup === 0 || g.blocksPerGroup > maxBlocksPerGroup) return `${at} has an impossible blocks-per-group ${g.blocksPerGroup}`;
  if (g.inodesPerGroup === 0 || g.inodesPerGroup > g.blockSize * 8) return `${at} has an impossible inodes-per-group ${g.inodesPerGroup}`;
  const groupCount = Math.ceil((g.blocksCount - g.firstDataBlock) / g.blocksPerGroup);
  if (g.inodesCount < ROOT_INODE || g.inodesCount > g.inodesPerGroup * groupCount) {
    return `${at} has an impossible inode count ${g.inodesCount} for ${groupCount} groups of ${g.inodesPerGroup} inodes`;
  }
  if (!isPowerOfTwo(g.inodeSize) || g.inodeSize < GOOD_OLD_INODE_SIZE || g.inodeSize > g.blockSize) return `${at} has an impossible inode size ${g.inodeSize}`;
  if (!isPowerOfTwo(g.descriptorSize) || g.descriptorSize < 32 || g.descriptorSize > g.blockSize) return `${at} has an impossible group descriptor size ${g.descriptorSize}`;
  if ((g.incompat & INCOMPAT_64BIT) !== 0 && g.descriptorSize < 64) return `${at} sets 64bit but has group descriptor size ${g.descriptorSize} (at least 64 expected)`;
  return null;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function damaged(message: string): MamoriError {
  return new MamoriError('FILESYSTEM_UNREADABLE', `${message}; the ext filesystem looks damaged (check it with e2fsck -n on a copy of the disk)`);
}

function unreadable(message: string): MamoriError {
  return new MamoriError('FILESYSTEM_UNREADABLE', message);
}

/** Insertion-ordered Map used as a least-recently-used cache. */
class LruCache<K, V> {
  private readonly entries = new Map<K, V>();
  private readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get(key: K): V | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }

  delete(key: K): void {
    this.entries.delete(key);
  }
}

interface Inode {
  number: number;
  /** Byte offset of the inode on the partition, for messages. */
  offset: number;
  raw: Buffer;
  mode: number;
  size: number;
  flags: number;
  /** i_blocks in 512-byte units (or filesystem blocks with HUGE_FILE_FL), only compared with zero. */
  blockUnits: number;
  fileAcl: number;
  iBlock: Buffer;
}

interface DirEntry {
  name: string;
  inode: number;
  /** From the dirent's file type byte; null when the filesystem lacks it or it says "unknown". */
  type: Ext4EntryType | null;
}

/** Logical blocks [logical, logical+count) live at physical blocks [physical, physical+count). */
interface BlockRun {
  logical: number;
  physical: number;
  count: number;
}

function inodeType(mode: number): Ext4EntryType {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'file';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'symlink';
    default: return 'other';
  }
}

function splitPath(path: string): string[] {
  return path.split('/').filter((part) => part.length > 0);
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

// ---------------------------------------------------------------------------------------------

export class Ext4Reader {
  readonly info: Ext4Info;
  private readonly reader: ByteReader;
  private readonly geo: Geometry;
  /** Group descriptor blocks, inode table blocks, extent and indirect blocks: all small and reread per lookup. */
  private readonly blockCache = new LruCache<number, Promise<Buffer>>(BLOCK_CACHE_ENTRIES);
  private readonly directoryCache = new LruCache<number, Promise<DirEntry[]>>(DIRECTORY_CACHE_ENTRIES);

  private constructor(reader: ByteReader, geo: Geometry) {
    this.reader = reader;
    this.geo = geo;
    this.info = geo.info;
  }

  /** Throws FILESYSTEM_UNREADABLE when the partition holds no usable ext2/3/4 filesystem. */
  static async open(reader: ByteReader): Promise<Ext4Reader> {
    if (reader.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) {
      throw unreadable(`the partition is ${reader.size} bytes, too small to hold an ext2/3/4 superblock at byte ${SUPERBLOCK_OFFSET}`);
    }
    const sb = await reader.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
    const geo = decodeGeometry(sb);
    if (geo === null) {
      throw unreadable(`no ext2/3/4 superblock: magic 0xEF53 missing at byte ${SUPERBLOCK_OFFSET + 0x38} (or block size field invalid) — this partition holds some other filesystem or none`);
    }
    const problem = geometryProblem(geo);
    if (problem !== null) throw damaged(problem);
    const fs = new Ext4Reader(reader, geo);
    const root = await fs.readInode(ROOT_INODE);
    if (inodeType(root.mode) !== 'dir') throw damaged(`the root inode 2 at byte ${root.offset} is not a directory (mode 0o${root.mode.toString(8)})`);
    return fs;
  }

  /** The file's bytes; follows symlinks. null when the path does not exist or is not a regular file. Larger than maxBytes (default 1 MiB) throws FILESYSTEM_UNREADABLE. */
  async readFile(path: string, opts: { maxBytes?: number } = {}): Promise<Buffer | null> {
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    const inode = await this.resolve(path, true);
    if (inode === null || inodeType(inode.mode) !== 'file') return null;
    if (inode.size > maxBytes) {
      throw unreadable(`${path} (inode ${inode.number}) is ${inode.size} bytes, more than the ${maxBytes}-byte limit for files the inspector reads`);
    }
    return this.readContent(inode, inode.size);
  }

  /** Entry names of a directory (without '.' and '..'), sorted; null when it does not exist or is not a directory. Follows symlinks. */
  async listDir(path: string): Promise<{ name: string; type: Ext4EntryType }[] | null> {
    const dir = await this.resolve(path, true);
    if (dir === null || inodeType(dir.mode) !== 'dir') return null;
    const entries = await this.directoryEntries(dir);
    const listed: { name: string; type: Ext4EntryType }[] = [];
    for (const entry of entries) {
      if (entry.name === '.' || entry.name === '..') continue;
      const type = entry.type ?? inodeType((await this.readInode(entry.inode)).mode);
      listed.push({ name: entry.name, type });
    }
    return listed.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** What a path is, without following a final symlink (unless the path ends in '/'); null when absent. */
  async stat(path: string): Promise<{ type: Ext4EntryType; size: number } | null> {
    const inode = await this.resolve(path, false);
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
  private async resolve(path: string, followFinal: boolean): Promise<Inode | null> {
    const root = await this.readInode(ROOT_INODE);
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
      const entry = (await this.directoryEntries(current)).find((e) => e.name === name);
      if (entry === undefined) return null;
      const child = await this.readInode(entry.inode);
      const isLast = pending.length === 0;
      if (inodeType(child.mode) === 'symlink' && (!isLast || follow)) {
        hops++;
        if (hops > MAX_SYMLINK_HOPS) throw unreadable(`more than ${MAX_SYMLINK_HOPS} symbolic links while resolving ${path} (a symlink loop?)`);
        const target = await this.symlinkTarget(child);
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

  private async symlinkTarget(link: Inode): Promise<string> {
    if (link.size > MAX_SYMLINK_TARGET) {
      throw damaged(`symlink inode ${link.number} at byte ${link.offset} claims a ${link.size}-byte target (at most ${MAX_SYMLINK_TARGET})`);
    }
    const bytes = this.isFastSymlink(link) ? link.iBlock.subarray(0, link.size) : await this.readContent(link, link.size);
    return bytes.toString('utf8');
  }

  /** Short targets live in i_block itself; the kernel tells them apart by the inode owning no data blocks. */
  private isFastSymlink(link: Inode): boolean {
    if ((link.flags & INODE_FLAG_INLINE_DATA) !== 0 || link.size >= I_BLOCK_SIZE) return false;
    const unitsPerCluster = (link.flags & INODE_FLAG_HUGE_FILE) !== 0 && (this.geo.roCompat & RO_COMPAT_HUGE_FILE) !== 0
      ? this.geo.clusterSize / this.geo.blockSize
      : this.geo.clusterSize / 512;
    const xattrBlockUnits = link.fileAcl !== 0 ? unitsPerCluster : 0;
    return link.blockUnits - xattrBlockUnits <= 0;
  }

  // -------------------------------------------------------------------------------------------
  // Raw reads

  private checkedByteRange(block: number, count: number, what: string): { offset: number; length: number } {
    const { blockSize, blocksCount } = this.geo;
    if (!Number.isSafeInteger(block) || block < 0 || count < 1 || block + count > blocksCount) {
      throw damaged(`${what} points at block ${block}${count > 1 ? `..${block + count - 1}` : ''}, outside the filesystem's ${blocksCount} blocks`);
    }
    const offset = block * blockSize;
    const length = count * blockSize;
    if (offset + length > this.reader.size) {
      throw unreadable(`${what} is at bytes ${offset}..${offset + length - 1}, past the end of the ${this.reader.size}-byte partition (truncated image or a filesystem larger than its partition)`);
    }
    return { offset, length };
  }

  /** One block, through the cache; concurrent callers share the same read. */
  private readBlock(block: number, what: string): Promise<Buffer> {
    const cached = this.blockCache.get(block);
    if (cached !== undefined) return cached;
    const { offset, length } = this.checkedByteRange(block, 1, what);
    const pending = this.reader.read(offset, length);
    this.blockCache.set(block, pending);
    pending.catch(() => this.blockCache.delete(block));
    return pending;
  }

  /** File data is read once, so it bypasses the cache, in as few requests as the layout allows. */
  private async readBlocksInto(target: Buffer, targetOffset: number, physical: number, count: number, what: string): Promise<void> {
    const { blockSize } = this.geo;
    this.checkedByteRange(physical, count, what);
    const blocksPerRead = Math.max(1, Math.floor(MAX_READ_BYTES / blockSize));
    for (let done = 0; done < count; done += blocksPerRead) {
      const n = Math.min(blocksPerRead, count - done);
      const bytes = await this.reader.read((physical + done) * blockSize, n * blockSize);
      const at = targetOffset + done * blockSize;
      bytes.copy(target, at, 0, Math.min(bytes.length, target.length - at));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Group descriptors and inodes

  private groupFirstBlock(group: number): number {
    return this.geo.firstDataBlock + group * this.geo.blocksPerGroup;
  }

  private groupHasSuperblock(group: number): boolean {
    const g = this.geo;
    if (group === 0) return true;
    if ((g.compat & COMPAT_SPARSE_SUPER2) !== 0) return group === g.backupGroups[0] || group === g.backupGroups[1];
    if (group === 1 || (g.roCompat & RO_COMPAT_SPARSE_SUPER) === 0) return true;
    if (group % 2 === 0) return false;
    return [3, 5, 7].some((base) => {
      let power = base;
      while (power < group) power *= base;
      return power === group;
    });
  }

  /** Where descriptor block `index` lives: right after the superblock's block, or with meta_bg at the start of its own meta group. */
  private descriptorBlock(index: number): number {
    const g = this.geo;
    const superblockBlock = Math.floor(SUPERBLOCK_OFFSET / g.blockSize);
    if ((g.incompat & INCOMPAT_META_BG) === 0 || index < g.firstMetaBg) return superblockBlock + 1 + index;
    const firstGroup = index * (g.blockSize / g.descriptorSize);
    return this.groupFirstBlock(firstGroup) + (this.groupHasSuperblock(firstGroup) ? 1 : 0);
  }

  private async inodeTableBlock(group: number): Promise<number> {
    const g = this.geo;
    const perBlock = g.blockSize / g.descriptorSize;
    const descriptorBlock = this.descriptorBlock(Math.floor(group / perBlock));
    const within = (group % perBlock) * g.descriptorSize;
    const block = await this.readBlock(descriptorBlock, `the group descriptor block for group ${group}`);
    const lo = block.readUInt32LE(within + 0x08);
    const hi = g.descriptorSize >= 64 ? block.readUInt32LE(within + 0x28) : 0;
    const table = lo + hi * 2 ** 32;
    const tableBlocks = Math.ceil((g.inodesPerGroup * g.inodeSize) / g.blockSize);
    if (table === 0 || table + tableBlocks > g.blocksCount) {
      throw damaged(`group descriptor ${group} (byte ${descriptorBlock * g.blockSize + within}) gives inode table block ${table}, outside the filesystem's ${g.blocksCount} blocks`);
    }
    return table;
  }

  private async readInode(number: number): Promise<Inode> {
    const g = this.geo;
    if (!Number.isInteger(number) || number < 1 || number > g.inodesCount) {
      throw damaged(`a directory entry refers to inode ${number}, outside 1..${g.inodesCount}`);
    }
    const group = Math.floor((number - 1) / g.inodesPerGroup);
    const indexInGroup = (number - 1) % g.inodesPerGroup;
    const table = await this.inodeTableBlock(group);
    const byteInTable = indexInGroup * g.inodeSize;
    const tableBlock = table + Math.floor(byteInTable / g.blockSize);
    const within = byteInTable % g.blockSize;
    const block = await this.readBlock(tableBlock, `the inode table block holding inode ${number}`);
    const raw = block.subarray(within, within + g.inodeSize);
    return {
      number,
      offset: tableBlock * g.blockSize + within,
      raw,
      mode: raw.readUInt16LE(0x00),
      size: raw.readUInt32LE(0x04) + raw.readUInt32LE(0x6c) * 2 ** 32,
      flags: raw.readUInt32LE(0x20),
      blockUnits: raw.readUInt32LE(0x1c) + raw.readUInt16LE(0x74) * 2 ** 32,
      fileAcl: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
      iBlock: raw.subarray(I_BLOCK_OFFSET, I_BLOCK_OFFSET + I_BLOCK_SIZE),
    };
  }

  // -------------------------------------------------------------------------------------------
  // File contents

  /** The first `length` bytes of the inode's data; holes and unwritten extents read as zeros. */
  private async readContent(inode: Inode, length: number): Promise<Buffer> {
    if ((inode.flags & INODE_FLAG_ENCRYPT) !== 0) {
      throw unreadable(`inode ${inode.number} is encrypted (fscrypt); its contents cannot be read without the owner's key`);
    }
    if ((inode.flags & INODE_FLAG_INLINE_DATA) !== 0) {
      const inline = this.inlineData(inode);
      if (inline.length < length) {
        throw damaged(`inline-data inode ${inode.number} at byte ${inode.offset} holds ${inline.length} bytes but its size is ${length}`);
      }
      return Buffer.from(inline.subarray(0, length));
    }
    const { blockSize } = this.geo;
    const blockCount = Math.ceil(length / blockSize);
    const out = Buffer.alloc(length);
    if (blockCount === 0) return out;
    const runs = (inode.flags & INODE_FLAG_EXTENTS) !== 0
      ? await this.extentRuns(inode, blockCount)
      : await this.blockMapRuns(inode, blockCount);
    for (const run of runs) {
      const start = Math.max(0, run.logical);
      const end = Math.min(blockCount, run.logical + run.count);
      if (start >= end) continue;
      const physical = run.physical + (start - run.logical);
      await this.readBlocksInto(out, start * blockSize, physical, end - start, `data of inode ${inode.number} (logical block ${start})`);
    }
    return out;
  }

  /** Data stored in the inode: i_block, continued by the system.data extended attribute in the inode's spare space. */
  private inlineData(inode: Inode): Buffer {
    const continuation = this.inodeXattr(inode, XATTR_INDEX_SYSTEM, 'data');
    return continuation === null ? inode.iBlock : Buffer.concat([inode.iBlock, continuation]);
  }

  /** An extended attribute stored inside the inode body (after i_extra_isize), or null. */
  private inodeXattr(inode: Inode, nameIndex: number, name: string): Buffer | null {
    const raw = inode.raw;
    if (raw.length <= GOOD_OLD_INODE_SIZE + 2) return null;
    const extraSize = raw.readUInt16LE(GOOD_OLD_INODE_SIZE);
    const headerAt = GOOD_OLD_INODE_SIZE + extraSize;
    if (extraSize % 4 !== 0 || headerAt + 4 > raw.length) return null;
    if (raw.readUInt32LE(headerAt) !== XATTR_IBODY_MAGIC) return null;
    const valuesBase = headerAt + 4;
    const where = `the in-inode extended attributes of inode ${inode.number} (byte ${inode.offset + headerAt})`;
    let at = valuesBase;
    // Entries are at least 16 bytes each, so the area bounds the loop.
    while (at + 4 <= raw.length && raw.readUInt32LE(at) !== 0) {
      if (at + 16 > raw.length) throw damaged(`${where} has an entry running past the inode`);
      const nameLen = raw.readUInt8(at);
      const index = raw.readUInt8(at + 1);
      const valueOffset = raw.readUInt16LE(at + 2);
      const valueInode = raw.readUInt32LE(at + 4);
      const valueSize = raw.readUInt32LE(at + 8);
      if (at + 16 + nameLen > raw.length) throw damaged(`${where} has a name running past the inode`);
      const entryName = raw.toString('latin1', at + 16, at + 16 + nameLen);
      if (index === nameIndex && entryName === name) {
        if (valueInode !== 0) throw unreadable(`${where}: the value of ${name} is stored in a separate inode (ea_inode), which this reader does not follow`);
        const start = valuesBase + valueOffset;
        if (start + valueSize > raw.length) throw damaged(`${where}: value of ${name} (${valueSize} bytes at ${valueOffset}) runs past the inode`);
        return raw.subarray(start, start + valueSize);
      }
      at += (16 + nameLen + 3) & ~3;
    }
    return null;
  }

  /** Logical-to-physical runs from the extent tree, only for the first `blockCount` logical blocks. */
  private async extentRuns(inode: Inode, blockCount: number): Promise<BlockRun[]> {
    const runs: BlockRun[] = [];
    const budget = { nodes: 0 };
    const rootWhere = `the extent tree root of inode ${inode.number} (byte ${inode.offset + I_BLOCK_OFFSET})`;
    await this.walkExtentNode(inode.iBlock, null, rootWhere, blockCount, runs, budget);
    return runs;
  }

  private async walkExtentNode(
    node: Buffer,
    expectedDepth: number | null,
    where: string,
    blockCount: number,
    runs: BlockRun[],
    budget: { nodes: number },
  ): Promise<void> {
    budget.nodes++;
    if (budget.nodes > MAX_EXTENT_NODES) throw damaged(`${where}: more than ${MAX_EXTENT_NODES} extent tree nodes`);
    const magic = node.readUInt16LE(0);
    const entries = node.readUInt16LE(2);
    const max = node.readUInt16LE(4);
    const depth = node.readUInt16LE(6);
    if (magic !== EXTENT_MAGIC) throw damaged(`${where} has extent header magic 0x${magic.toString(16)}, expected 0xf30a`);
    if (depth > MAX_EXTENT_DEPTH || (expectedDepth !== null && depth !== expectedDepth)) {
      throw damaged(`${where} has extent tree depth ${depth}${expectedDepth !== null ? ` where ${expectedDepth} was expected` : ` (at most ${MAX_EXTENT_DEPTH})`}`);
    }
    if (entries > max || EXTENT_ENTRY_SIZE * (1 + max) > node.length) {
      throw damaged(`${where} claims ${entries} of ${max} extent entries, more than fit in its ${node.length} bytes`);
    }
    for (let i = 0; i < entries; i++) {
      const at = EXTENT_ENTRY_SIZE * (1 + i);
      const logical = node.readUInt32LE(at);
      if (logical >= blockCount) break; // entries are sorted by logical block
      if (depth === 0) {
        this.collectLeafExtent(node, at, where, runs);
        continue;
      }
      const child = node.readUInt32LE(at + 4) + node.readUInt16LE(at + 8) * 2 ** 32;
      const childWhere = `extent tree node block ${child} (depth ${depth - 1})`;
      const childNode = await this.readBlock(child, `${where}, index ${i}`);
      await this.walkExtentNode(childNode, depth - 1, childWhere, blockCount, runs, budget);
    }
  }

  private collectLeafExtent(node: Buffer, at: number, where: string, runs: BlockRun[]): void {
    const logical = node.readUInt32LE(at);
    const rawLength = node.readUInt16LE(at + 4);
    const physical = node.readUInt16LE(at + 6) * 2 ** 32 + node.readUInt32LE(at + 8);
    // Unwritten extents are allocated but must read as zeros, exactly like a hole.
    if (rawLength === 0 || rawLength > EXTENT_INIT_MAX_LEN) return;
    if (physical + rawLength > this.geo.blocksCount) {
      throw damaged(`${where}: extent for logical block ${logical} points at blocks ${physical}..${physical + rawLength - 1}, outside the filesystem's ${this.geo.blocksCount} blocks`);
    }
    runs.push({ logical, physical, count: rawLength });
  }

  /** ext2/ext3 block map: 12 direct pointers, then single, double and triple indirect blocks; 0 is a hole. */
  private async blockMapRuns(inode: Inode, blockCount: number): Promise<BlockRun[]> {
    const pointers: number[] = [];
    for (let i = 0; i < DIRECT_BLOCKS && pointers.length < blockCount; i++) pointers.push(inode.iBlock.readUInt32LE(i * 4));
    for (let level = 1; level <= 3 && pointers.length < blockCount; level++) {
      const top = inode.iBlock.readUInt32LE((DIRECT_BLOCKS + level - 1) * 4);
      await this.collectIndirect(top, level, blockCount, pointers, `inode ${inode.number}'s level-${level} indirect block`);
    }
    if (pointers.length < blockCount) throw damaged(`inode ${inode.number} at byte ${inode.offset} is larger than a block map can address`);
    return pointersToRuns(pointers);
  }

  private async collectIndirect(block: number, level: number, blockCount: number, pointers: number[], what: string): Promise<void> {
    const perBlock = this.geo.blockSize / 4;
    if (block === 0) {
      const covered = perBlock ** level;
      const holes = Math.min(covered, blockCount - pointers.length);
      for (let i = 0; i < holes; i++) pointers.push(0);
      return;
    }
    const table = await this.readBlock(block, what);
    for (let i = 0; i < perBlock && pointers.length < blockCount; i++) {
      const entry = table.readUInt32LE(i * 4);
      if (level === 1) {
        if (entry >= this.geo.blocksCount) throw damaged(`${what} (block ${block}) entry ${i} points at block ${entry}, outside the filesystem's ${this.geo.blocksCount} blocks`);
        pointers.push(entry);
      } else {
        await this.collectIndirect(entry, level - 1, blockCount, pointers, `${what} → level-${level - 1} block`);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Directories

  private directoryEntries(dir: Inode): Promise<DirEntry[]> {
    const cached = this.directoryCache.get(dir.number);
    if (cached !== undefined) return cached;
    const pending = this.loadDirectory(dir);
    this.directoryCache.set(dir.number, pending);
    pending.catch(() => this.directoryCache.delete(dir.number));
    return pending;
  }

  /**
   * Every block scanned in order. htree (dir_index) folders need no special case: their index
   * blocks look like one empty entry spanning the block (or, in block 0, like '..' whose record
   * covers the index), and their leaves hold ordinary entries.
   */
  private async loadDirectory(dir: Inode): Promise<DirEntry[]> {
    const where = `directory inode ${dir.number} (byte ${dir.offset})`;
    if ((dir.flags & INODE_FLAG_ENCRYPT) !== 0) throw unreadable(`${where} is encrypted (fscrypt); its names cannot be read without the owner's key`);
    if ((dir.flags & INODE_FLAG_INLINE_DATA) !== 0) return this.loadInlineDirectory(dir, where);
    const { blockSize } = this.geo;
    if (dir.size > MAX_DIRECTORY_BYTES) throw damaged(`${where} claims ${dir.size} bytes, more than the ${MAX_DIRECTORY_BYTES}-byte limit for a folder`);
    if (dir.size % blockSize !== 0) throw damaged(`${where} has size ${dir.size}, not a multiple of the ${blockSize}-byte block size`);
    const content = await this.readContent(dir, dir.size);
    const entries: DirEntry[] = [];
    for (let at = 0; at < content.length; at += blockSize) {
      const block = content.subarray(at, at + blockSize);
      if (isAllZero(block)) continue; // a hole: the kernel skips these too
      this.parseDirentArea(block, `${where}, logical block ${at / blockSize}`, entries);
    }
    return entries;
  }

  /** i_block starts with the parent's inode number, then entries; more entries may follow in system.data. */
  private loadInlineDirectory(dir: Inode, where: string): DirEntry[] {
    const parent = dir.iBlock.readUInt32LE(0);
    const entries: DirEntry[] = [{ name: '..', inode: parent, type: 'dir' }];
    this.parseDirentArea(dir.iBlock.subarray(INLINE_DIR_PARENT_SIZE), `${where}, inline entries`, entries);
    const continuation = this.inodeXattr(dir, XATTR_INDEX_SYSTEM, 'data');
    if (continuation !== null && continuation.length > 0) this.parseDirentArea(continuation, `${where}, inline entries in system.data`, entries);
    return entries;
  }

  private parseDirentArea(area: Buffer, where: string, entries: DirEntry[]): void {
    const hasFileType = (this.geo.incompat & INCOMPAT_FILETYPE) !== 0;
    let at = 0;
    while (at < area.length) {
      if (at + DIRENT_HEADER_SIZE > area.length) throw damaged(`${where}: directory entry at offset ${at} runs past the end of the block`);
      const inode = area.readUInt32LE(at);
      const recLen = decodeRecLen(area.readUInt16LE(at + 4), this.geo.blockSize);
      const nameLen = hasFileType ? area.readUInt8(at + 6) : area.readUInt16LE(at + 6);
      if (recLen < DIRENT_HEADER_SIZE || recLen % 4 !== 0 || at + recLen > area.length || DIRENT_HEADER_SIZE + nameLen > recLen) {
        throw damaged(`${where}: directory entry at offset ${at} has record length ${recLen} and name length ${nameLen}, which do not fit`);
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

/** Merges per-block pointers into contiguous runs so each run costs one read; holes (0) are left out. */
function pointersToRuns(pointers: number[]): BlockRun[] {
  const runs: BlockRun[] = [];
  let current: BlockRun | null = null;
  for (let logical = 0; logical < pointers.length; logical++) {
    const physical = pointers[logical] ?? 0;
    if (physical === 0) {
      current = null;
    } else if (current !== null && current.physical + current.count === physical) {
      current.count++;
    } else {
      current = { logical, physical, count: 1 };
      runs.push(current);
    }
  }
  return runs;
}

/**
 * The ext2/3/4 superblock: what kind of ext filesystem this is (for the probe and the inspector's
 * report) and the geometry the reader needs to find inodes. Kept apart from the reader because
 * the probe only wants to recognise the filesystem and must not pull in file reading.
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

// ---------------------------------------------------------------------------------------------
// On-disk constants (ext4 disk layout documentation; offsets are within their structure).

export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
const EXT_MAGIC = 0xef53;
export const ROOT_INODE = 2;
export const GOOD_OLD_INODE_SIZE = 128;
const MAX_LOG_BLOCK_SIZE = 6; // 64 KiB blocks, the largest any ext version defines

const COMPAT_HAS_JOURNAL = 0x4;
export const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
export const INCOMPAT_META_BG = 0x10;
const INCOMPAT_64BIT = 0x80;
export const RO_COMPAT_SPARSE_SUPER = 0x1;
const RO_COMPAT_LARGE_FILE = 0x2;
const RO_COMPAT_BTREE_DIR = 0x4;
export const RO_COMPAT_HUGE_FILE = 0x8;
const RO_COMPAT_BIGALLOC = 0x200;
export const COMPAT_SPARSE_SUPER2 = 0x200;

/** Bits libblkid accepts for ext3 (and ext2); anything else makes the filesystem ext4. */
const EXT3_INCOMPAT_BITS = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
const EXT3_RO_COMPAT_BITS = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

/** e2fsprogs' names (lib/e2p), as dumpe2fs prints them, by bit number. */
const COMPAT_NAMES: Record<number, string> = {
  0: 'dir_prealloc',
  1: 'imagic_inodes',
  2: 'has_journal',
  3: 'ext_attr',
  4: 'resize_inode',
  5: 'dir_index',
  6: 'lazy_bg',
  8: 'snapshot_bitmap',
  9: 'sparse_super2',
  10: 'fast_commit',
  11: 'stable_inodes',
  12: 'orphan_file',
};
const INCOMPAT_NAMES: Record<number, string> = {
  0: 'compression',
  1: 'filetype',
  2: 'needs_recovery',
  3: 'journal_dev',
  4: 'meta_bg',
  6: 'extent',
  7: '64bit',
  8: 'mmp',
  9: 'flex_bg',
  10: 'ea_inode',
  12: 'dirdata',
  13: 'metadata_csum_seed',
  14: 'large_dir',
  15: 'inline_data',
  16: 'encrypt',
  17: 'casefold',
};
const RO_COMPAT_NAMES: Record<number, string> = {
  0: 'sparse_super',
  1: 'large_file',
  3: 'huge_file',
  4: 'uninit_bg',
  5: 'dir_nlink',
  6: 'extra_isize',
  8: 'quota',
  9: 'bigalloc',
  10: 'metadata_csum',
  11: 'replica',
  12: 'read-only',
  13: 'project',
  14: 'shared_blocks',
  15: 'verity',
  16: 'orphan_present',
};

// ---------------------------------------------------------------------------------------------
// Superblock

/** Everything the reader needs from the superblock, beyond what Ext4Info reports. */
export interface Geometry {
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

export function decodeGeometry(sb: Buffer): Geometry | null {
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
export function geometryProblem(g: Geometry): string | null {
  const at = `the superblock at byte ${SUPERBLOCK_OFFSET}`;
  if ((g.incompat & INCOMPAT_JOURNAL_DEV) !== 0)
    return `${at} describes an external ext3/ext4 journal device, not a filesystem with files`;
  if (g.blocksCount === 0 || g.blocksCount <= g.firstDataBlock)
    return `${at} has an impossible block count ${g.blocksCount}`;
  // One bitmap block covers a group; with bigalloc each bit stands for a cluster.
  const maxBlocksPerGroup = g.blockSize * 8 * (g.clusterSize / g.blockSize);
  if (g.blocksPerGroup === 0 || g.blocksPerGroup > maxBlocksPerGroup)
    return `${at} has an impossible blocks-per-group ${g.blocksPerGroup}`;
  if (g.inodesPerGroup === 0 || g.inodesPerGroup > g.blockSize * 8)
    return `${at} has an impossible inodes-per-group ${g.inodesPerGroup}`;
  const groupCount = Math.ceil((g.blocksCount - g.firstDataBlock) / g.blocksPerGroup);
  if (g.inodesCount < ROOT_INODE || g.inodesCount > g.inodesPerGroup * groupCount) {
    return `${at} has an impossible inode count ${g.inodesCount} for ${groupCount} groups of ${g.inodesPerGroup} inodes`;
  }
  if (!isPowerOfTwo(g.inodeSize) || g.inodeSize < GOOD_OLD_INODE_SIZE || g.inodeSize > g.blockSize)
    return `${at} has an impossible inode size ${g.inodeSize}`;
  if (!isPowerOfTwo(g.descriptorSize) || g.descriptorSize < 32 || g.descriptorSize > g.blockSize)
    return `${at} has an impossible group descriptor size ${g.descriptorSize}`;
  if ((g.incompat & INCOMPAT_64BIT) !== 0 && g.descriptorSize < 64)
    return `${at} sets 64bit but has group descriptor size ${g.descriptorSize} (at least 64 expected)`;
  return null;
}

import { damaged, unreadable } from './ext4-errors.js';
import { GOOD_OLD_INODE_SIZE } from './ext4-superblock.js';

/**
 * One decoded ext inode and what can be learnt from its bytes alone (type, flags, attributes
 * stored in its spare space), without reading any other block.
 */

export type Ext4EntryType = 'file' | 'dir' | 'symlink' | 'other';

// On-disk constants (ext4 disk layout documentation; offsets are within the inode).

const S_IFMT = 0xf000;
const S_IFREG = 0x8000;
const S_IFDIR = 0x4000;
const S_IFLNK = 0xa000;

export const INODE_FLAG_ENCRYPT = 0x800;
export const INODE_FLAG_HUGE_FILE = 0x40000;
export const INODE_FLAG_EXTENTS = 0x80000;
export const INODE_FLAG_INLINE_DATA = 0x10000000;

/** i_block: 15 32-bit words holding block pointers, the extent tree root, inline data or a short symlink target. */
export const I_BLOCK_OFFSET = 0x28;
export const I_BLOCK_SIZE = 60;

const XATTR_IBODY_MAGIC = 0xea020000;
export const XATTR_INDEX_SYSTEM = 7;

export interface Inode {
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

/** Decodes the fields the reader uses from the inode's `raw` bytes. */
export function decodeInode(number: number, offset: number, raw: Buffer): Inode {
  return {
    number,
    offset,
    raw,
    mode: raw.readUInt16LE(0x00),
    size: raw.readUInt32LE(0x04) + raw.readUInt32LE(0x6c) * 2 ** 32,
    flags: raw.readUInt32LE(0x20),
    blockUnits: raw.readUInt32LE(0x1c) + raw.readUInt16LE(0x74) * 2 ** 32,
    fileAcl: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
    iBlock: raw.subarray(I_BLOCK_OFFSET, I_BLOCK_OFFSET + I_BLOCK_SIZE),
  };
}

export function inodeType(mode: number): Ext4EntryType {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return 'file';
    case S_IFDIR:
      return 'dir';
    case S_IFLNK:
      return 'symlink';
    default:
      return 'other';
  }
}

/** An extended attribute stored inside the inode body (after i_extra_isize), or null. */
export function inodeXattr(inode: Inode, nameIndex: number, name: string): Buffer | null {
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
      if (valueInode !== 0)
        throw unreadable(
          `${where}: the value of ${name} is stored in a separate inode (ea_inode), which this reader does not follow`,
        );
      const start = valuesBase + valueOffset;
      if (start + valueSize > raw.length)
        throw damaged(`${where}: value of ${name} (${valueSize} bytes at ${valueOffset}) runs past the inode`);
      return raw.subarray(start, start + valueSize);
    }
    at += (16 + nameLen + 3) & ~3;
  }
  return null;
}

/** Data stored in the inode: i_block, continued by the system.data extended attribute in the inode's spare space. */
export function inlineData(inode: Inode): Buffer {
  const continuation = inodeXattr(inode, XATTR_INDEX_SYSTEM, 'data');
  return continuation === null ? inode.iBlock : Buffer.concat([inode.iBlock, continuation]);
}

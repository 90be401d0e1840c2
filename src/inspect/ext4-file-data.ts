import type { Ext4BlockDevice } from './ext4-block-device.js';
import { damaged, unreadable } from './ext4-errors.js';
import {
  I_BLOCK_OFFSET,
  INODE_FLAG_ENCRYPT,
  INODE_FLAG_EXTENTS,
  INODE_FLAG_INLINE_DATA,
  inlineData,
  type Inode,
} from './ext4-inode.js';
import type { Geometry } from './ext4-superblock.js';

/**
 * Reads an inode's contents, whichever of the three layouts holds them: inline in the inode
 * (inline_data), an extent tree (ext4) or the ext2/ext3 block map of direct and indirect blocks.
 * Only the part of the mapping that covers the bytes asked for is walked.
 */

// On-disk constants (ext4 disk layout documentation; offsets are within their structure).

const DIRECT_BLOCKS = 12;

const EXTENT_MAGIC = 0xf30a;
const EXTENT_ENTRY_SIZE = 12;
const MAX_EXTENT_DEPTH = 5;
/** ee_len above this marks an allocated-but-unwritten extent, which reads as zeros. */
const EXTENT_INIT_MAX_LEN = 32768;
/** A sane tree for a file we are allowed to read has far fewer nodes; more means a damaged (or hostile) tree. */
const MAX_EXTENT_NODES = 10_000;

/** Logical blocks [logical, logical+count) live at physical blocks [physical, physical+count). */
interface BlockRun {
  logical: number;
  physical: number;
  count: number;
}

export class Ext4FileData {
  readonly #geo: Geometry;
  readonly #blocks: Ext4BlockDevice;

  constructor(geo: Geometry, blocks: Ext4BlockDevice) {
    this.#geo = geo;
    this.#blocks = blocks;
  }

  /** The first `length` bytes of the inode's data; holes and unwritten extents read as zeros. */
  async readContent(inode: Inode, length: number): Promise<Buffer> {
    if ((inode.flags & INODE_FLAG_ENCRYPT) !== 0) {
      throw unreadable(
        `inode ${inode.number} is encrypted (fscrypt); its contents cannot be read without the owner's key`,
      );
    }
    if ((inode.flags & INODE_FLAG_INLINE_DATA) !== 0) {
      const inline = inlineData(inode);
      if (inline.length < length) {
        throw damaged(
          `inline-data inode ${inode.number} at byte ${inode.offset} holds ${inline.length} bytes but its size is ${length}`,
        );
      }
      return Buffer.from(inline.subarray(0, length));
    }
    const { blockSize } = this.#geo;
    const blockCount = Math.ceil(length / blockSize);
    const out = Buffer.alloc(length);
    if (blockCount === 0) return out;
    const runs =
      (inode.flags & INODE_FLAG_EXTENTS) !== 0
        ? await this.#extentRuns(inode, blockCount)
        : await this.#blockMapRuns(inode, blockCount);
    for (const run of runs) {
      const start = Math.max(0, run.logical);
      const end = Math.min(blockCount, run.logical + run.count);
      if (start >= end) continue;
      const physical = run.physical + (start - run.logical);
      await this.#blocks.readBlocksInto(
        out,
        start * blockSize,
        physical,
        end - start,
        `data of inode ${inode.number} (logical block ${start})`,
      );
    }
    return out;
  }

  /** Logical-to-physical runs from the extent tree, only for the first `blockCount` logical blocks. */
  async #extentRuns(inode: Inode, blockCount: number): Promise<BlockRun[]> {
    const runs: BlockRun[] = [];
    const budget = { nodes: 0 };
    const rootWhere = `the extent tree root of inode ${inode.number} (byte ${inode.offset + I_BLOCK_OFFSET})`;
    await this.#walkExtentNode(inode.iBlock, null, rootWhere, blockCount, runs, budget);
    return runs;
  }

  async #walkExtentNode(
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
    if (magic !== EXTENT_MAGIC)
      throw damaged(`${where} has extent header magic 0x${magic.toString(16)}, expected 0xf30a`);
    if (depth > MAX_EXTENT_DEPTH || (expectedDepth !== null && depth !== expectedDepth)) {
      throw damaged(
        `${where} has extent tree depth ${depth}${expectedDepth !== null ? ` where ${expectedDepth} was expected` : ` (at most ${MAX_EXTENT_DEPTH})`}`,
      );
    }
    if (entries > max || EXTENT_ENTRY_SIZE * (1 + max) > node.length) {
      throw damaged(`${where} claims ${entries} of ${max} extent entries, more than fit in its ${node.length} bytes`);
    }
    for (let i = 0; i < entries; i++) {
      const at = EXTENT_ENTRY_SIZE * (1 + i);
      const logical = node.readUInt32LE(at);
      if (logical >= blockCount) break; // entries are sorted by logical block
      if (depth === 0) {
        this.#collectLeafExtent(node, at, where, runs);
        continue;
      }
      const child = node.readUInt32LE(at + 4) + node.readUInt16LE(at + 8) * 2 ** 32;
      const childWhere = `extent tree node block ${child} (depth ${depth - 1})`;
      const childNode = await this.#blocks.readBlock(child, `${where}, index ${i}`);
      await this.#walkExtentNode(childNode, depth - 1, childWhere, blockCount, runs, budget);
    }
  }

  #collectLeafExtent(node: Buffer, at: number, where: string, runs: BlockRun[]): void {
    const logical = node.readUInt32LE(at);
    const rawLength = node.readUInt16LE(at + 4);
    const physical = node.readUInt16LE(at + 6) * 2 ** 32 + node.readUInt32LE(at + 8);
    // Unwritten extents are allocated but must read as zeros, exactly like a hole.
    if (rawLength === 0 || rawLength > EXTENT_INIT_MAX_LEN) return;
    if (physical + rawLength > this.#geo.blocksCount) {
      throw damaged(
        `${where}: extent for logical block ${logical} points at blocks ${physical}..${physical + rawLength - 1}, outside the filesystem's ${this.#geo.blocksCount} blocks`,
      );
    }
    runs.push({ logical, physical, count: rawLength });
  }

  /** ext2/ext3 block map: 12 direct pointers, then single, double and triple indirect blocks; 0 is a hole. */
  async #blockMapRuns(inode: Inode, blockCount: number): Promise<BlockRun[]> {
    const pointers: number[] = [];
    for (let i = 0; i < DIRECT_BLOCKS && pointers.length < blockCount; i++)
      pointers.push(inode.iBlock.readUInt32LE(i * 4));
    for (let level = 1; level <= 3 && pointers.length < blockCount; level++) {
      const top = inode.iBlock.readUInt32LE((DIRECT_BLOCKS + level - 1) * 4);
      await this.#collectIndirect(
        top,
        level,
        blockCount,
        pointers,
        `inode ${inode.number}'s level-${level} indirect block`,
      );
    }
    if (pointers.length < blockCount)
      throw damaged(`inode ${inode.number} at byte ${inode.offset} is larger than a block map can address`);
    return pointersToRuns(pointers);
  }

  async #collectIndirect(
    block: number,
    level: number,
    blockCount: number,
    pointers: number[],
    what: string,
  ): Promise<void> {
    const perBlock = this.#geo.blockSize / 4;
    if (block === 0) {
      const covered = perBlock ** level;
      const holes = Math.min(covered, blockCount - pointers.length);
      for (let i = 0; i < holes; i++) pointers.push(0);
      return;
    }
    const table = await this.#blocks.readBlock(block, what);
    for (let i = 0; i < perBlock && pointers.length < blockCount; i++) {
      const entry = table.readUInt32LE(i * 4);
      if (level === 1) {
        if (entry >= this.#geo.blocksCount)
          throw damaged(
            `${what} (block ${block}) entry ${i} points at block ${entry}, outside the filesystem's ${this.#geo.blocksCount} blocks`,
          );
        pointers.push(entry);
      } else {
        await this.#collectIndirect(entry, level - 1, blockCount, pointers, `${what} → level-${level - 1} block`);
      }
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

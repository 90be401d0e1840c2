import type { Ext4BlockDevice } from './ext4-block-device.js';
import { damaged } from './ext4-errors.js';
import { decodeInode, type Inode } from './ext4-inode.js';
import {
  COMPAT_SPARSE_SUPER2,
  INCOMPAT_META_BG,
  RO_COMPAT_SPARSE_SUPER,
  SUPERBLOCK_OFFSET,
  type Geometry,
} from './ext4-superblock.js';

/**
 * Finds an inode from its number: the group it belongs to, that group's descriptor (wherever
 * meta_bg or sparse_super put the descriptor block) and the one inode table block holding it.
 */
export class Ext4InodeTable {
  readonly #geo: Geometry;
  readonly #blocks: Ext4BlockDevice;

  constructor(geo: Geometry, blocks: Ext4BlockDevice) {
    this.#geo = geo;
    this.#blocks = blocks;
  }

  #groupFirstBlock(group: number): number {
    return this.#geo.firstDataBlock + group * this.#geo.blocksPerGroup;
  }

  #groupHasSuperblock(group: number): boolean {
    const g = this.#geo;
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
  #descriptorBlock(index: number): number {
    const g = this.#geo;
    const superblockBlock = Math.floor(SUPERBLOCK_OFFSET / g.blockSize);
    if ((g.incompat & INCOMPAT_META_BG) === 0 || index < g.firstMetaBg) return superblockBlock + 1 + index;
    const firstGroup = index * (g.blockSize / g.descriptorSize);
    return this.#groupFirstBlock(firstGroup) + (this.#groupHasSuperblock(firstGroup) ? 1 : 0);
  }

  async #inodeTableBlock(group: number): Promise<number> {
    const g = this.#geo;
    const perBlock = g.blockSize / g.descriptorSize;
    const descriptorBlock = this.#descriptorBlock(Math.floor(group / perBlock));
    const within = (group % perBlock) * g.descriptorSize;
    const block = await this.#blocks.readBlock(descriptorBlock, `the group descriptor block for group ${group}`);
    const lo = block.readUInt32LE(within + 0x08);
    const hi = g.descriptorSize >= 64 ? block.readUInt32LE(within + 0x28) : 0;
    const table = lo + hi * 2 ** 32;
    const tableBlocks = Math.ceil((g.inodesPerGroup * g.inodeSize) / g.blockSize);
    if (table === 0 || table + tableBlocks > g.blocksCount) {
      throw damaged(
        `group descriptor ${group} (byte ${descriptorBlock * g.blockSize + within}) gives inode table block ${table}, outside the filesystem's ${g.blocksCount} blocks`,
      );
    }
    return table;
  }

  async readInode(number: number): Promise<Inode> {
    const g = this.#geo;
    if (!Number.isInteger(number) || number < 1 || number > g.inodesCount) {
      throw damaged(`a directory entry refers to inode ${number}, outside 1..${g.inodesCount}`);
    }
    const group = Math.floor((number - 1) / g.inodesPerGroup);
    const indexInGroup = (number - 1) % g.inodesPerGroup;
    const table = await this.#inodeTableBlock(group);
    const byteInTable = indexInGroup * g.inodeSize;
    const tableBlock = table + Math.floor(byteInTable / g.blockSize);
    const within = byteInTable % g.blockSize;
    const block = await this.#blocks.readBlock(tableBlock, `the inode table block holding inode ${number}`);
    const raw = block.subarray(within, within + g.inodeSize);
    return decodeInode(number, tableBlock * g.blockSize + within, raw);
  }
}

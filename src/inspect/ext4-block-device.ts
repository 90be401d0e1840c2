import type { ByteReader } from './byte-reader.js';
import { damaged, unreadable } from './ext4-errors.js';
import { LruCache } from './ext4-lru-cache.js';
import type { Geometry } from './ext4-superblock.js';

/** One read per contiguous run, but split so a single request never gets huge. */
const MAX_READ_BYTES = 4 * 1024 * 1024;

const BLOCK_CACHE_ENTRIES = 256;

/**
 * Raw block reads for the ext modules: every block number is checked against the filesystem and
 * the partition before it becomes a byte offset, and small metadata blocks are cached.
 */
export class Ext4BlockDevice {
  readonly #reader: ByteReader;
  readonly #geo: Geometry;
  /** Group descriptor blocks, inode table blocks, extent and indirect blocks: all small and reread per lookup. */
  readonly #blockCache = new LruCache<number, Promise<Buffer>>(BLOCK_CACHE_ENTRIES);

  constructor(reader: ByteReader, geo: Geometry) {
    this.#reader = reader;
    this.#geo = geo;
  }

  #checkedByteRange(block: number, count: number, what: string): { offset: number; length: number } {
    const { blockSize, blocksCount } = this.#geo;
    if (!Number.isSafeInteger(block) || block < 0 || count < 1 || block + count > blocksCount) {
      throw damaged(
        `${what} points at block ${block}${count > 1 ? `..${block + count - 1}` : ''}, outside the filesystem's ${blocksCount} blocks`,
      );
    }
    const offset = block * blockSize;
    const length = count * blockSize;
    if (offset + length > this.#reader.size) {
      throw unreadable(
        `${what} is at bytes ${offset}..${offset + length - 1}, past the end of the ${this.#reader.size}-byte partition (truncated image or a filesystem larger than its partition)`,
      );
    }
    return { offset, length };
  }

  /** One block, through the cache; concurrent callers share the same read. */
  readBlock(block: number, what: string): Promise<Buffer> {
    const cached = this.#blockCache.get(block);
    if (cached !== undefined) return cached;
    const { offset, length } = this.#checkedByteRange(block, 1, what);
    const pending = this.#reader.read(offset, length);
    this.#blockCache.set(block, pending);
    pending.catch(() => this.#blockCache.delete(block));
    return pending;
  }

  /** File data is read once, so it bypasses the cache, in as few requests as the layout allows. */
  async readBlocksInto(
    target: Buffer,
    targetOffset: number,
    physical: number,
    count: number,
    what: string,
  ): Promise<void> {
    const { blockSize } = this.#geo;
    this.#checkedByteRange(physical, count, what);
    const blocksPerRead = Math.max(1, Math.floor(MAX_READ_BYTES / blockSize));
    for (let done = 0; done < count; done += blocksPerRead) {
      const n = Math.min(blocksPerRead, count - done);
      const bytes = await this.#reader.read((physical + done) * blockSize, n * blockSize);
      const at = targetOffset + done * blockSize;
      bytes.copy(target, at, 0, Math.min(bytes.length, target.length - at));
    }
  }
}

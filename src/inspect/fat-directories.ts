import type { FatGeometry } from './fat-boot-sector.js';
import { parseDirectory, type ParsedDirectory } from './fat-directory-entries.js';
import { unreadable } from './fat-errors.js';
import type { FatTable } from './fat-table.js';
import type { FatVolume } from './fat-volume.js';

/** FAT allows at most 65536 entries of 32 bytes in a directory; a longer chain is damage. */
const MAX_DIRECTORY_BYTES = 65536 * 32;

/** The fixed FAT12/16 root region is cached under this key; real clusters start at 2. */
export const FIXED_ROOT = 0;

/**
 * Directories read and parsed once, by first cluster: path lookups pass through the same
 * folders again and again, and each read may be a network round trip.
 */
export class FatDirectories {
  readonly #geometry: FatGeometry;
  readonly #volume: FatVolume;
  readonly #table: FatTable;
  /** Parsed directories by first cluster (FIXED_ROOT for the FAT12/16 root region). */
  readonly #directories = new Map<number, Promise<ParsedDirectory>>();

  constructor(geometry: FatGeometry, volume: FatVolume, table: FatTable) {
    this.#geometry = geometry;
    this.#volume = volume;
    this.#table = table;
  }

  rootKey(): number {
    return this.#geometry.info.type === 'fat32' ? this.#geometry.rootCluster : FIXED_ROOT;
  }

  /** A directory, parsed once and cached; concurrent callers share the same read. */
  directory(key: number, where: string): Promise<ParsedDirectory> {
    let pending = this.#directories.get(key);
    if (pending === undefined) {
      pending = this.#readDirectoryBytes(key, where).then((bytes) =>
        parseDirectory(bytes, this.#geometry.info.type === 'fat32'),
      );
      // A failed read (say, a dropped connection) must not stay cached.
      pending.catch(() => this.#directories.delete(key));
      this.#directories.set(key, pending);
    }
    return pending;
  }

  async #readDirectoryBytes(key: number, where: string): Promise<Buffer> {
    const { rootDirOffset, rootDirBytes, info } = this.#geometry;
    if (key === FIXED_ROOT) return this.#volume.readAt(rootDirOffset, rootDirBytes, 'the root directory region');
    const limit = Math.ceil(MAX_DIRECTORY_BYTES / info.clusterSize);
    const chain = await this.#table.clusterChain(key, limit + 1, `directory ${where}`);
    if (chain.length > limit) {
      throw unreadable(
        `Directory ${where} has a FAT cluster chain (from cluster ${key}) longer than the ${MAX_DIRECTORY_BYTES} bytes FAT allows for a directory; the filesystem is damaged (run fsck.fat on a copy).`,
      );
    }
    return this.#volume.readClusters(chain, chain.length * info.clusterSize, `directory ${where}`);
  }
}

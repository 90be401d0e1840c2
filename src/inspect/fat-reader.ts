/**
 * A read-only FAT12/FAT16/FAT32 reader, enough for the disk inspector to look inside an EFI System
 * Partition: list directories and read small files. Every read goes through a ByteReader whose reads
 * may each be a network round trip, so the reader fetches only metadata it needs, reads the FAT in
 * large chunks, caches the FAT chunks and directories it has read, and reads contiguous clusters
 * with one request.
 *
 * Layout and rules follow Microsoft's "FAT: General Overview of On-Disk Format" (the FAT type is
 * decided by the cluster count; see fatTypeOf in fat-boot-sector.ts for the one exception) plus the
 * VFAT long-name and Windows NT lower-case extensions.
 *
 * This file holds the public API and path lookup; fat-boot-sector, fat-table (cluster chains),
 * fat-volume (reads), fat-directories and fat-directory-entries (8.3 and long names) do the rest.
 */
import type { ByteReader } from './byte-reader.js';
import { decodeBootSector, type FatGeometry, type FatInfo } from './fat-boot-sector.js';
import { FatDirectories } from './fat-directories.js';
import type { StoredEntry } from './fat-directory-entries.js';
import { unreadable } from './fat-errors.js';
import { FatTable } from './fat-table.js';
import { FatVolume } from './fat-volume.js';

// The boot sector check and its result type live with the boot sector code; callers import them from here.
export { parseFatBootSector } from './fat-boot-sector.js';
export type { FatInfo } from './fat-boot-sector.js';

/** One listed entry; directories report size 0, as FAT stores it. */
type FatDirEntry = { name: string; type: 'file' | 'dir'; size: number };

/** Biggest file readFile returns whole; anything bigger is refused rather than buffered. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

/** Path components with '.' dropped and '..' applied; FAT paths here always start at the root. */
function pathComponents(path: string): string[] {
  const components: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') components.pop();
    else components.push(part);
  }
  return components;
}

function sameName(a: string, b: string): boolean {
  return a.toUpperCase() === b.toUpperCase();
}

function byNameIgnoringCase(a: FatDirEntry, b: FatDirEntry): number {
  const la = a.name.toLowerCase();
  const lb = b.name.toLowerCase();
  if (la !== lb) return la < lb ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

type Resolved = { kind: 'root' } | { kind: 'entry'; entry: StoredEntry; path: string };

export class FatReader {
  readonly #geometry: FatGeometry;
  #info: FatInfo;
  readonly #volume: FatVolume;
  readonly #table: FatTable;
  readonly #directories: FatDirectories;

  private constructor(reader: ByteReader, geometry: FatGeometry) {
    this.#geometry = geometry;
    this.#info = geometry.info;
    this.#volume = new FatVolume(reader, geometry);
    this.#table = new FatTable(this.#volume, geometry);
    this.#directories = new FatDirectories(geometry, this.#volume, this.#table);
  }

  get info(): FatInfo {
    return this.#info;
  }

  /** Reads the boot sector and the root directory; throws FILESYSTEM_UNREADABLE when not FAT. */
  static async open(reader: ByteReader): Promise<FatReader> {
    if (reader.size < 512) {
      throw unreadable(
        `The partition is only ${reader.size} bytes long, too small to hold a FAT boot sector at byte offset 0.`,
      );
    }
    const verdict = decodeBootSector(await reader.read(0, 512));
    if (!verdict.ok) {
      throw unreadable(
        `The partition does not hold a FAT filesystem: its boot sector at byte offset 0 ${verdict.problem}. Check that this is the EFI System Partition and that the partition table points at its first sector.`,
      );
    }
    const geometry = verdict.geometry;
    if (geometry.dataOffset > reader.size) {
      throw unreadable(
        `The FAT boot sector at byte offset 0 puts the data region at byte offset ${geometry.dataOffset}, beyond the end of the ${reader.size}-byte partition; the partition is truncated or the boot sector is damaged.`,
      );
    }
    const fat = new FatReader(reader, geometry);
    const root = await fat.#directories.directory(fat.#directories.rootKey(), '/');
    if (root.volumeLabel !== null) fat.#info = { ...geometry.info, label: root.volumeLabel };
    return fat;
  }

  /** Entries of a directory, sorted by name ignoring case; null when absent or not a directory. */
  async listDir(path: string): Promise<FatDirEntry[] | null> {
    const target = await this.#resolve(path);
    const located = target === null ? null : this.#directoryLocation(target);
    if (located === null) return null;
    const directory = await this.#directories.directory(located.key, located.where);
    return directory.entries
      .map((e): FatDirEntry => ({ name: e.name, type: e.isDir ? 'dir' : 'file', size: e.size }))
      .sort(byNameIgnoringCase);
  }

  /** A file's bytes (or its first maxBytes); null when absent or a directory. */
  async readFile(path: string, opts: { maxBytes?: number } = {}): Promise<Buffer | null> {
    const { maxBytes } = opts;
    if (maxBytes !== undefined && (!Number.isSafeInteger(maxBytes) || maxBytes < 0)) {
      throw new RangeError(`maxBytes must be a non-negative integer, got ${maxBytes}`);
    }
    const target = await this.#resolve(path);
    if (target === null || target.kind === 'root' || target.entry.isDir) return null;
    const { entry } = target;
    const wanted = Math.min(entry.size, maxBytes ?? Number.POSITIVE_INFINITY);
    if (wanted > MAX_FILE_BYTES) {
      throw unreadable(
        `File ${target.path} is ${entry.size} bytes; reading more than ${MAX_FILE_BYTES} bytes of a file from the FAT filesystem is refused. Ask for fewer bytes (maxBytes).`,
      );
    }
    if (wanted === 0) return Buffer.alloc(0);
    const clustersNeeded = Math.ceil(wanted / this.#geometry.info.clusterSize);
    const chain = await this.#table.clusterChain(entry.firstCluster, clustersNeeded, `file ${target.path}`);
    if (chain.length < clustersNeeded) {
      throw unreadable(
        `File ${target.path} is ${entry.size} bytes but its FAT cluster chain (from cluster ${entry.firstCluster}) ends after ${chain.length} clusters of ${this.#geometry.info.clusterSize} bytes; the filesystem is damaged (run fsck.fat on a copy).`,
      );
    }
    return this.#volume.readClusters(chain, wanted, `file ${target.path}`);
  }

  /** The directory cache key and printable path of a resolved directory; null for a file. */
  #directoryLocation(target: Resolved): { key: number; where: string } | null {
    if (target.kind === 'root') return { key: this.#directories.rootKey(), where: '/' };
    if (!target.entry.isDir) return null;
    // Cluster 0 in a subdirectory entry would alias the FAT12/16 root region (key FIXED_ROOT).
    if (target.entry.firstCluster < 2) {
      throw unreadable(
        `Directory ${target.path} has first cluster ${target.entry.firstCluster} in its directory entry, which is not a data cluster; the filesystem is damaged (run fsck.fat on a copy).`,
      );
    }
    return { key: target.entry.firstCluster, where: target.path };
  }

  async #resolve(path: string): Promise<Resolved | null> {
    let current: Resolved = { kind: 'root' };
    for (const component of pathComponents(path)) {
      const located = this.#directoryLocation(current);
      if (located === null) return null;
      const { key, where } = located;
      const directory = await this.#directories.directory(key, where);
      const found = directory.entries.find((e) => sameName(e.name, component) || sameName(e.shortName, component));
      if (found === undefined) return null;
      current = { kind: 'entry', entry: found, path: `${where === '/' ? '' : where}/${found.name}` };
    }
    return current;
  }
}

/**
 * A read-only FAT12/FAT16/FAT32 reader, enough for the disk inspector to look inside an EFI System
 * Partition: list directories and read small files. Every read goes through a ByteReader whose reads
 * may each be a network round trip, so the reader fetches only metadata it needs, reads the FAT in
 * large chunks, caches the FAT chunks and directories it has read, and reads contiguous clusters
 * with one request.
 *
 * Layout and rules follow Microsoft's "FAT: General Overview of On-Disk Format" (the FAT type is
 * decided by the cluster count; see fatTypeOf for the one exception) plus the VFAT long-name and
 * Windows NT lower-case extensions.
 */
import type { ByteReader } from './byte-reader.js';
import { MamoriError } from '../core/mamori-error.js';

export interface FatInfo {
  /** By cluster count (< 4085 FAT12, < 65525 FAT16, else FAT32), except that a FAT32-layout BPB is always FAT32. */
  type: 'fat12' | 'fat16' | 'fat32';
  /** Volume label, trimmed; '' when the volume has none ('NO NAME'). */
  label: string;
  /** Volume serial as blkid prints it, 'XXXX-XXXX'; '' when the boot sector carries none. */
  serial: string;
  clusterSize: number;
  totalBytes: number;
}

/** One listed entry; directories report size 0, as FAT stores it. */
type FatDirEntry = { name: string; type: 'file' | 'dir'; size: number };

/** Biggest file readFile returns whole; anything bigger is refused rather than buffered. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
/** The FAT is fetched in pieces this big (a multiple of every entry width and sector size). */
const FAT_CHUNK_BYTES = 1024 * 1024;
/** Longest single data read; longer contiguous runs are split so one request stays reasonable. */
const MAX_DATA_READ_BYTES = 4 * 1024 * 1024;
/** FAT allows at most 65536 entries of 32 bytes in a directory; a longer chain is damage. */
const MAX_DIRECTORY_BYTES = 65536 * 32;
const DIR_ENTRY_BYTES = 32;

const ATTR_VOLUME_ID = 0x08;
const ATTR_DIRECTORY = 0x10;
/** READ_ONLY|HIDDEN|SYSTEM|VOLUME_ID: the attribute byte of a VFAT long-name entry (under mask 0x3F). */
const ATTR_LONG_NAME = 0x0f;
const ENTRY_END = 0x00;
const ENTRY_DELETED = 0xe5;
/** A name really starting with byte 0xE5 is stored as 0x05, since 0xE5 means "deleted". */
const ENTRY_KANJI_E5 = 0x05;
const LFN_LAST_PART = 0x40;
/** Windows NT flags in byte 12 of a short entry: base name / extension were typed in lower case. */
const NT_LOWER_BASE = 0x08;
const NT_LOWER_EXT = 0x10;

/** Upper half of code page 437, the OEM code page Linux uses by default for 8.3 names. */
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

/** Where the structures of one volume are; every offset is in bytes from the partition start. */
interface FatGeometry {
  info: FatInfo;
  clusterCount: number;
  /** The FAT copy this reader consults (FAT32 may mark one copy active). */
  fatOffset: number;
  fatBytes: number;
  /** FAT12/16 only: the fixed root directory region. */
  rootDirOffset: number;
  rootDirBytes: number;
  /** FAT32 only: first cluster of the root directory; 0 on FAT12/16. */
  rootCluster: number;
  dataOffset: number;
}

type BootSectorVerdict = { ok: true; geometry: FatGeometry } | { ok: false; problem: string };

function unreadable(message: string): MamoriError {
  return new MamoriError('FILESYSTEM_UNREADABLE', message);
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function decodeOemBytes(bytes: Buffer): string {
  let text = '';
  for (const byte of bytes) text += byte < 0x80 ? String.fromCharCode(byte) : CP437_HIGH[byte - 0x80];
  return text;
}

/** Trailing blanks pad 8.3 names and labels; only spaces (and NULs some tools write) are padding. */
function trimPadding(text: string): string {
  return text.replace(/[ \0]+$/, '');
}

/** A label as found in the boot sector or the root directory; 'NO NAME' is the spec's "no label". */
function decodeLabel(raw: Buffer): string {
  const copy = Buffer.from(raw);
  if (copy[0] === ENTRY_KANJI_E5) copy[0] = ENTRY_DELETED;
  const label = trimPadding(decodeOemBytes(copy));
  return label === 'NO NAME' ? '' : label;
}

function formatSerial(id: number): string {
  const half = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
  return `${half(id >>> 16)}-${half(id & 0xffff)}`;
}

/**
 * Microsoft's rule: the cluster count alone decides the type. One exception: a BPB laid out for
 * FAT32 (no 16-bit FAT size, no fixed root directory) on a volume with fewer clusters than FAT32's
 * minimum. mkfs.fat makes these (with a warning) and Linux reads them as FAT32; the count rule
 * would call them FAT16 without a root directory, so they are read as the FAT32 they were made as.
 */
function fatTypeOf(clusterCount: number, fat32Layout: boolean): FatInfo['type'] {
  if (fat32Layout) return 'fat32';
  if (clusterCount < 4085) return 'fat12';
  if (clusterCount < 65525) return 'fat16';
  return 'fat32';
}

/** The boot sector's basic checks; a reason when it is not a FAT boot sector, else null. */
function bootSectorBasicProblem(bs: Buffer): string | null {
  if (bs.length < 512) return `is only ${bs.length} bytes long`;
  if (bs.readUInt16LE(510) !== 0xaa55) return 'has no 0x55AA signature at byte 510';
  const jumpsShort = bs[0] === 0xeb && bs[2] === 0x90;
  if (!jumpsShort && bs[0] !== 0xe9) return 'does not start with a jump instruction (0xEB ?? 0x90 or 0xE9)';
  const bytesPerSector = bs.readUInt16LE(11);
  if (!isPowerOfTwo(bytesPerSector) || bytesPerSector < 512 || bytesPerSector > 4096) {
    return `gives ${bytesPerSector} bytes per sector at byte 11 (FAT needs a power of two from 512 to 4096)`;
  }
  if (!isPowerOfTwo(bs.readUInt8(13))) return `gives ${bs.readUInt8(13)} sectors per cluster at byte 13 (not a power of two)`;
  if (bs.readUInt16LE(14) === 0) return 'gives 0 reserved sectors at byte 14';
  if (bs.readUInt8(16) === 0) return 'gives 0 FAT copies at byte 16';
  return null;
}

/** Label and serial from the extended boot record, whose place depends on the BPB layout. */
function bootSectorVolumeId(bs: Buffer, fat32Layout: boolean): { label: string; serial: string } {
  const base = fat32Layout ? 64 : 36;
  const signature = bs.readUInt8(base + 2);
  // 0x29 carries serial and label; the older 0x28 carries the serial only.
  const serial = signature === 0x29 || signature === 0x28 ? formatSerial(bs.readUInt32LE(base + 3)) : '';
  const label = signature === 0x29 ? decodeLabel(bs.subarray(base + 7, base + 18)) : '';
  return { label, serial };
}

function decodeBootSector(bs: Buffer): BootSectorVerdict {
  const basicProblem = bootSectorBasicProblem(bs);
  if (basicProblem !== null) return { ok: false, problem: basicProblem };

  const bytesPerSector = bs.readUInt16LE(11);
  const sectorsPerCluster = bs.readUInt8(13);
  const reservedSectors = bs.readUInt16LE(14);
  const fatCount = bs.readUInt8(16);
  const rootEntryCount = bs.readUInt16LE(17);
  const fatSectors16 = bs.readUInt16LE(22);
  const fatSectors = fatSectors16 !== 0 ? fatSectors16 : bs.readUInt32LE(36);
  const totalSectors = bs.readUInt16LE(19) !== 0 ? bs.readUInt16LE(19) : bs.readUInt32LE(32);
  if (fatSectors === 0) return { ok: false, problem: 'gives a FAT size of 0 sectors (bytes 22 and 36)' };
  if (totalSectors === 0) return { ok: false, problem: 'gives a volume size of 0 sectors (bytes 19 and 32)' };

  const rootDirSectors = Math.ceil((rootEntryCount * DIR_ENTRY_BYTES) / bytesPerSector);
  const metadataSectors = reservedSectors + fatCount * fatSectors + rootDirSectors;
  if (totalSectors <= metadataSectors) {
    return { ok: false, problem: `gives ${totalSectors} sectors in all, no more than its ${metadataSectors} sectors of FATs and root directory` };
  }
  const clusterCount = Math.floor((totalSectors - metadataSectors) / sectorsPerCluster);
  const fat32Layout = fatSectors16 === 0 && rootEntryCount === 0;
  const type = fatTypeOf(clusterCount, fat32Layout);

  let rootCluster = 0;
  let activeFat = 0;
  if (type === 'fat32') {
    if (!fat32Layout) return { ok: false, problem: `has ${clusterCount} clusters (FAT32) yet a FAT12/16 layout (16-bit FAT size ${fatSectors16} at byte 22, ${rootEntryCount} fixed root entries at byte 17)` };
    rootCluster = bs.readUInt32LE(44);
    if (rootCluster < 2 || rootCluster > clusterCount + 1) return { ok: false, problem: `gives root directory cluster ${rootCluster} at byte 44, outside clusters 2..${clusterCount + 1}` };
    const extFlags = bs.readUInt16LE(40);
    // Bit 7 means "mirroring off": only the FAT numbered in bits 0-3 is kept up to date.
    if ((extFlags & 0x80) !== 0) activeFat = extFlags & 0x0f;
    if (activeFat >= fatCount) return { ok: false, problem: `names FAT copy ${activeFat} as active at byte 40, but there are only ${fatCount}` };
  } else if (rootEntryCount === 0) {
    return { ok: false, problem: `has ${clusterCount} clusters (${type.toUpperCase()}) but no root directory entries at byte 17` };
  }

  const { label, serial } = bootSectorVolumeId(bs, fatSectors16 === 0);
  const clusterSize = bytesPerSector * sectorsPerCluster;
  const fatBytes = fatSectors * bytesPerSector;
  const firstFatOffset = reservedSectors * bytesPerSector;
  const rootDirOffset = firstFatOffset + fatCount * fatBytes;
  return {
    ok: true,
    geometry: {
      info: { type, label, serial, clusterSize, totalBytes: totalSectors * bytesPerSector },
      clusterCount,
      fatOffset: firstFatOffset + activeFat * fatBytes,
      fatBytes,
      rootDirOffset,
      rootDirBytes: type === 'fat32' ? 0 : rootEntryCount * DIR_ENTRY_BYTES,
      rootCluster,
      dataOffset: rootDirOffset + rootDirSectors * bytesPerSector,
    },
  };
}

/** From the boot sector (first 512 bytes): null unless it is a FAT boot sector. */
export function parseFatBootSector(bs: Buffer): FatInfo | null {
  const verdict = decodeBootSector(bs);
  return verdict.ok ? verdict.geometry.info : null;
}

// ---------------------------------------------------------------------------------------------
// Directory entries

/** One entry of a directory as stored, with both its long and its 8.3 name (lookups accept either). */
interface StoredEntry {
  name: string;
  shortName: string;
  isDir: boolean;
  size: number;
  firstCluster: number;
}

interface ParsedDirectory {
  entries: StoredEntry[];
  /** Only meaningful in the root directory. */
  volumeLabel: string | null;
}

/** A long name being gathered from its entries, which come last part first. */
interface LongNameInProgress {
  checksum: number;
  /** The sequence number the next entry must carry; 0 once part 1 has been seen. */
  nextSequence: number;
  /** UTF-16 code units, part 1 first. */
  parts: number[][];
}

/** Where the 13 UTF-16 characters of a long-name entry sit. */
const LFN_CHAR_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

function longNameUnits(entry: Buffer): number[] {
  return LFN_CHAR_OFFSETS.map((at) => entry.readUInt16LE(at));
}

/** Add one long-name entry; a part out of order or from another chain breaks the name (null). */
function addLongNamePart(current: LongNameInProgress | null, entry: Buffer): LongNameInProgress | null {
  const order = entry.readUInt8(0);
  const sequence = order & 0x1f;
  const checksum = entry.readUInt8(13);
  if (sequence === 0) return null;
  if ((order & LFN_LAST_PART) !== 0) {
    const parts: number[][] = [];
    parts[sequence - 1] = longNameUnits(entry);
    return { checksum, nextSequence: sequence - 1, parts };
  }
  if (current === null || sequence !== current.nextSequence || checksum !== current.checksum) return null;
  current.parts[sequence - 1] = longNameUnits(entry);
  current.nextSequence = sequence - 1;
  return current;
}

/** The checksum of an 8.3 name that every long-name entry of that file repeats. */
function shortNameChecksum(rawName: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((((sum & 1) << 7) | (sum >> 1)) + (rawName[i] ?? 0)) & 0xff;
  return sum;
}

/** The long name for this short entry, or null when there is none or its chain is incomplete or stale. */
function completedLongName(progress: LongNameInProgress | null, shortEntry: Buffer): string | null {
  if (progress === null || progress.nextSequence !== 0) return null;
  if (progress.checksum !== shortNameChecksum(shortEntry.subarray(0, 11))) return null;
  const units = progress.parts.flat();
  const end = units.indexOf(0x0000);
  const name = String.fromCharCode(...(end === -1 ? units : units.slice(0, end)));
  return name === '' ? null : name;
}

function shortNameOf(entry: Buffer): string {
  const raw = Buffer.from(entry.subarray(0, 11));
  if (raw[0] === ENTRY_KANJI_E5) raw[0] = ENTRY_DELETED;
  const ntFlags = entry.readUInt8(12);
  let base = trimPadding(decodeOemBytes(raw.subarray(0, 8)));
  let ext = trimPadding(decodeOemBytes(raw.subarray(8, 11)));
  if ((ntFlags & NT_LOWER_BASE) !== 0) base = base.toLowerCase();
  if ((ntFlags & NT_LOWER_EXT) !== 0) ext = ext.toLowerCase();
  return ext === '' ? base : `${base}.${ext}`;
}

function parseDirectory(bytes: Buffer, highClusterWord: boolean): ParsedDirectory {
  const entries: StoredEntry[] = [];
  let volumeLabel: string | null = null;
  let longName: LongNameInProgress | null = null;
  for (let at = 0; at + DIR_ENTRY_BYTES <= bytes.length; at += DIR_ENTRY_BYTES) {
    const entry = bytes.subarray(at, at + DIR_ENTRY_BYTES);
    const first = entry.readUInt8(0);
    const attributes = entry.readUInt8(11);
    if (first === ENTRY_END) break;
    if (first === ENTRY_DELETED) {
      longName = null;
      continue;
    }
    if ((attributes & 0x3f) === ATTR_LONG_NAME) {
      longName = addLongNamePart(longName, entry);
      continue;
    }
    const name = completedLongName(longName, entry);
    longName = null;
    if ((attributes & ATTR_VOLUME_ID) !== 0) {
      if (volumeLabel === null && (attributes & ATTR_DIRECTORY) === 0) volumeLabel = decodeLabel(entry.subarray(0, 11));
      continue;
    }
    const shortName = shortNameOf(entry);
    if (shortName === '.' || shortName === '..') continue;
    const isDir = (attributes & ATTR_DIRECTORY) !== 0;
    // FAT12/16 keep other data (OS/2 extended attributes) in the high word; only FAT32 uses it for clusters.
    const high = highClusterWord ? entry.readUInt16LE(20) : 0;
    entries.push({
      name: name ?? shortName,
      shortName,
      isDir,
      size: isDir ? 0 : entry.readUInt32LE(28),
      firstCluster: high * 0x10000 + entry.readUInt16LE(26),
    });
  }
  return { entries, volumeLabel };
}

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

/** Runs of consecutive cluster numbers, so contiguous data is fetched with one read. */
function contiguousRuns(chain: number[]): { first: number; count: number }[] {
  const runs: { first: number; count: number }[] = [];
  for (const cluster of chain) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.first + last.count === cluster) last.count += 1;
    else runs.push({ first: cluster, count: 1 });
  }
  return runs;
}

/** The fixed FAT12/16 root region is cached under this key; real clusters start at 2. */
const FIXED_ROOT = 0;

type Resolved = { kind: 'root' } | { kind: 'entry'; entry: StoredEntry; path: string };

export class FatReader {
  readonly #reader: ByteReader;
  readonly #geometry: FatGeometry;
  #info: FatInfo;
  readonly #fatChunks = new Map<number, Promise<Buffer>>();
  /** Parsed directories by first cluster (FIXED_ROOT for the FAT12/16 root region). */
  readonly #directories = new Map<number, Promise<ParsedDirectory>>();

  private constructor(reader: ByteReader, geometry: FatGeometry) {
    this.#reader = reader;
    this.#geometry = geometry;
    this.#info = geometry.info;
  }

  get info(): FatInfo {
    return this.#info;
  }

  /** Reads the boot sector and the root directory; throws FILESYSTEM_UNREADABLE when not FAT. */
  static async open(reader: ByteReader): Promise<FatReader> {
    if (reader.size < 512) {
      throw unreadable(`The partition is only ${reader.size} bytes long, too small to hold a FAT boot sector at byte offset 0.`);
    }
    const verdict = decodeBootSector(await reader.read(0, 512));
    if (!verdict.ok) {
      throw unreadable(`The partition does not hold a FAT filesystem: its boot sector at byte offset 0 ${verdict.problem}. Check that this is the EFI System Partition and that the partition table points at its first sector.`);
    }
    const geometry = verdict.geometry;
    if (geometry.dataOffset > reader.size) {
      throw unreadable(`The FAT boot sector at byte offset 0 puts the data region at byte offset ${geometry.dataOffset}, beyond the end of the ${reader.size}-byte partition; the partition is truncated or the boot sector is damaged.`);
    }
    const fat = new FatReader(reader, geometry);
    const root = await fat.#directory(fat.#rootKey(), '/');
    if (root.volumeLabel !== null) fat.#info = { ...geometry.info, label: root.volumeLabel };
    return fat;
  }

  /** Entries of a directory, sorted by name ignoring case; null when absent or not a directory. */
  async listDir(path: string): Promise<FatDirEntry[] | null> {
    const target = await this.#resolve(path);
    const located = target === null ? null : this.#directoryLocation(target);
    if (located === null) return null;
    const directory = await this.#directory(located.key, located.where);
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
      throw unreadable(`File ${target.path} is ${entry.size} bytes; reading more than ${MAX_FILE_BYTES} bytes of a file from the FAT filesystem is refused. Ask for fewer bytes (maxBytes).`);
    }
    if (wanted === 0) return Buffer.alloc(0);
    const clustersNeeded = Math.ceil(wanted / this.#geometry.info.clusterSize);
    const chain = await this.#clusterChain(entry.firstCluster, clustersNeeded, `file ${target.path}`);
    if (chain.length < clustersNeeded) {
      throw unreadable(`File ${target.path} is ${entry.size} bytes but its FAT cluster chain (from cluster ${entry.firstCluster}) ends after ${chain.length} clusters of ${this.#geometry.info.clusterSize} bytes; the filesystem is damaged (run fsck.fat on a copy).`);
    }
    return this.#readClusters(chain, wanted, `file ${target.path}`);
  }

  /** The directory cache key and printable path of a resolved directory; null for a file. */
  #directoryLocation(target: Resolved): { key: number; where: string } | null {
    if (target.kind === 'root') return { key: this.#rootKey(), where: '/' };
    if (!target.entry.isDir) return null;
    // Cluster 0 in a subdirectory entry would alias the FAT12/16 root region (key FIXED_ROOT).
    if (target.entry.firstCluster < 2) {
      throw unreadable(`Directory ${target.path} has first cluster ${target.entry.firstCluster} in its directory entry, which is not a data cluster; the filesystem is damaged (run fsck.fat on a copy).`);
    }
    return { key: target.entry.firstCluster, where: target.path };
  }

  #rootKey(): number {
    return this.#geometry.info.type === 'fat32' ? this.#geometry.rootCluster : FIXED_ROOT;
  }

  async #resolve(path: string): Promise<Resolved | null> {
    let current: Resolved = { kind: 'root' };
    for (const component of pathComponents(path)) {
      const located = this.#directoryLocation(current);
      if (located === null) return null;
      const { key, where } = located;
      const directory = await this.#directory(key, where);
      const found = directory.entries.find((e) => sameName(e.name, component) || sameName(e.shortName, component));
      if (found === undefined) return null;
      current = { kind: 'entry', entry: found, path: `${where === '/' ? '' : where}/${found.name}` };
    }
    return current;
  }

  /** A directory, parsed once and cached; concurrent callers share the same read. */
  #directory(key: number, where: string): Promise<ParsedDirectory> {
    let pending = this.#directories.get(key);
    if (pending === undefined) {
      pending = this.#readDirectoryBytes(key, where).then((bytes) => parseDirectory(bytes, this.#geometry.info.type === 'fat32'));
      // A failed read (say, a dropped connection) must not stay cached.
      pending.catch(() => this.#directories.delete(key));
      this.#directories.set(key, pending);
    }
    return pending;
  }

  async #readDirectoryBytes(key: number, where: string): Promise<Buffer> {
    const { rootDirOffset, rootDirBytes, info } = this.#geometry;
    if (key === FIXED_ROOT) return this.#readAt(rootDirOffset, rootDirBytes, 'the root directory region');
    const limit = Math.ceil(MAX_DIRECTORY_BYTES / info.clusterSize);
    const chain = await this.#clusterChain(key, limit + 1, `directory ${where}`);
    if (chain.length > limit) {
      throw unreadable(`Directory ${where} has a FAT cluster chain (from cluster ${key}) longer than the ${MAX_DIRECTORY_BYTES} bytes FAT allows for a directory; the filesystem is damaged (run fsck.fat on a copy).`);
    }
    return this.#readClusters(chain, chain.length * info.clusterSize, `directory ${where}`);
  }

  /**
   * Up to maxClusters clusters of the chain starting at first. Stops at an end-of-chain marker;
   * throws on a loop, a bad-cluster marker, or a cluster number outside the volume.
   */
  async #clusterChain(first: number, maxClusters: number, what: string): Promise<number[]> {
    const chain: number[] = [];
    const seen = new Set<number>();
    let cluster = first;
    let cameFrom: number | null = null;
    for (;;) {
      this.#checkClusterNumber(cluster, cameFrom, what);
      if (seen.has(cluster)) {
        throw unreadable(`The FAT cluster chain of ${what} loops: the FAT entry of cluster ${cameFrom} (byte offset ${this.#fatEntryOffset(cameFrom ?? 0)} of the partition) leads back to cluster ${cluster}. The filesystem is damaged (run fsck.fat on a copy).`);
      }
      seen.add(cluster);
      chain.push(cluster);
      if (chain.length >= maxClusters) return chain;
      const next = await this.#fatEntry(cluster, what);
      if (next >= this.#endOfChainMin()) return chain;
      cameFrom = cluster;
      cluster = next;
    }
  }

  #checkClusterNumber(cluster: number, cameFrom: number | null, what: string): void {
    const last = this.#geometry.clusterCount + 1;
    if (cluster >= 2 && cluster <= last) return;
    const source = cameFrom === null
      ? 'its directory entry'
      : `the FAT entry of cluster ${cameFrom} (byte offset ${this.#fatEntryOffset(cameFrom)} of the partition)`;
    const meaning = cluster === this.#badClusterMarker() ? 'the bad-cluster marker' : `cluster ${cluster}, outside the volume's clusters 2..${last}`;
    throw unreadable(`The FAT cluster chain of ${what} is broken: ${source} gives ${meaning}. The filesystem is damaged (run fsck.fat on a copy).`);
  }

  #endOfChainMin(): number {
    switch (this.#geometry.info.type) {
      case 'fat12': return 0xff8;
      case 'fat16': return 0xfff8;
      case 'fat32': return 0x0ffffff8;
    }
  }

  #badClusterMarker(): number {
    return this.#endOfChainMin() - 1;
  }

  /** Byte offset of a cluster's entry within the FAT (12-bit entries take one and a half bytes). */
  #fatEntryIndexBytes(cluster: number): number {
    switch (this.#geometry.info.type) {
      case 'fat12': return cluster + (cluster >> 1);
      case 'fat16': return cluster * 2;
      case 'fat32': return cluster * 4;
    }
  }

  #fatEntryOffset(cluster: number): number {
    return this.#geometry.fatOffset + this.#fatEntryIndexBytes(cluster);
  }

  async #fatEntry(cluster: number, what: string): Promise<number> {
    const at = this.#fatEntryIndexBytes(cluster);
    const width = this.#geometry.info.type === 'fat32' ? 4 : 2;
    if (at + width > this.#geometry.fatBytes) {
      throw unreadable(`The FAT cluster chain of ${what} reaches cluster ${cluster}, whose entry would lie past the end of the ${this.#geometry.fatBytes}-byte FAT at byte offset ${this.#geometry.fatOffset}; the boot sector or the FAT is damaged.`);
    }
    const chunkIndex = Math.floor(at / FAT_CHUNK_BYTES);
    const chunk = await this.#fatChunk(chunkIndex);
    const inChunk = at - chunkIndex * FAT_CHUNK_BYTES;
    switch (this.#geometry.info.type) {
      case 'fat32': return chunk.readUInt32LE(inChunk) & 0x0fffffff; // the top 4 bits are reserved
      case 'fat16': return chunk.readUInt16LE(inChunk);
      case 'fat12': {
        // A 12-bit entry can straddle two chunks.
        const low = chunk.readUInt8(inChunk);
        const high = inChunk + 1 < chunk.length ? chunk.readUInt8(inChunk + 1) : (await this.#fatChunk(chunkIndex + 1)).readUInt8(0);
        const pair = low | (high << 8);
        return (cluster & 1) === 1 ? pair >> 4 : pair & 0xfff;
      }
    }
  }

  #fatChunk(index: number): Promise<Buffer> {
    let pending = this.#fatChunks.get(index);
    if (pending === undefined) {
      const start = index * FAT_CHUNK_BYTES;
      const length = Math.min(FAT_CHUNK_BYTES, this.#geometry.fatBytes - start);
      pending = this.#readAt(this.#geometry.fatOffset + start, length, 'the FAT');
      pending.catch(() => this.#fatChunks.delete(index));
      this.#fatChunks.set(index, pending);
    }
    return pending;
  }

  /** The first `length` bytes held by a chain of clusters, one read per contiguous run. */
  async #readClusters(chain: number[], length: number, what: string): Promise<Buffer> {
    const { clusterSize } = this.#geometry.info;
    const pieces: Buffer[] = [];
    let remaining = length;
    for (const run of contiguousRuns(chain)) {
      let offset = this.#geometry.dataOffset + (run.first - 2) * clusterSize;
      let runBytes = Math.min(run.count * clusterSize, remaining);
      while (runBytes > 0) {
        const piece = Math.min(runBytes, MAX_DATA_READ_BYTES);
        pieces.push(await this.#readAt(offset, piece, what));
        offset += piece;
        runBytes -= piece;
        remaining -= piece;
      }
      if (remaining === 0) break;
    }
    return pieces.length === 1 && pieces[0] !== undefined ? pieces[0] : Buffer.concat(pieces, length - remaining);
  }

  async #readAt(offset: number, length: number, what: string): Promise<Buffer> {
    if (offset + length > this.#reader.size) {
      throw unreadable(`Reading ${what} needs bytes ${offset}..${offset + length} of the partition, but it is only ${this.#reader.size} bytes long; the partition is truncated or the FAT metadata is damaged.`);
    }
    const bytes = await this.#reader.read(offset, length);
    if (bytes.length !== length) {
      throw unreadable(`Reading ${what} at byte offset ${offset} of the partition returned ${bytes.length} bytes instead of ${length}.`);
    }
    return bytes;
  }
}

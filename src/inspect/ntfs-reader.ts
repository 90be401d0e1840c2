import type { ByteReader } from './byte-reader.js';
import { MamoriError } from '../core/mamori-error.js';
import { parseBootSector, type Geometry } from './ntfs-boot-sector.js';
import { NtfsDirectories } from './ntfs-directories.js';
import { unreadable } from './ntfs-errors.js';
import { FIRST_USER_RECORD, NtfsMft, RECORD_ROOT, RECORD_VOLUME } from './ntfs-mft.js';
import {
  ATTR_DATA,
  ATTR_FLAG_COMPRESSION_MASK,
  ATTR_FLAG_ENCRYPTED,
  ATTR_VOLUME_NAME,
  RECORD_FLAG_DIRECTORY,
  RECORD_FLAG_IN_USE,
  type MftRecord,
} from './ntfs-mft-record.js';
import { compareNamesIgnoringCase } from './ntfs-names.js';
import { streamSize } from './ntfs-stream.js';
import { NtfsVolume } from './ntfs-volume.js';

/**
 * A read-only NTFS reader: enough to find a Windows installation, list directories and read
 * files such as the registry hives. It walks only the metadata on the way to what it is asked
 * for (boot sector → $MFT runs → the directory B+trees along one path → one file's runs), so it
 * stays fast on big volumes where every read may be a network round trip.
 *
 * Layout notes follow the public NTFS documentation (the Linux-NTFS project's description of
 * the on-disk format); nothing here is taken from another implementation. The same holds for
 * the ntfs-* modules this file is built from: ntfs-boot-sector; ntfs-mft with ntfs-mft-record,
 * ntfs-fixups, ntfs-data-runs and ntfs-stream (records, attributes and their values);
 * ntfs-volume (reading those values); ntfs-directories ($I30 indexes) with ntfs-names.
 */

export interface NtfsInfo {
  label: string;
  /** 16 upper-case hex digits of the 64-bit volume serial (boot sector bytes 0x48..0x4F). */
  serial: string;
  clusterSize: number;
  mftRecordSize: number;
  /** Sectors the boot sector says the volume has, times the sector size. */
  totalBytes: number;
}

interface NtfsDirEntry {
  name: string;
  type: 'file' | 'dir';
}

const DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024;
const MAX_PATH_COMPONENTS = 256;

const NAMESPACE_DOS = 2;

export class NtfsReader {
  readonly info: NtfsInfo;
  readonly #volume: NtfsVolume;
  readonly #mft: NtfsMft;
  readonly #directories: NtfsDirectories;
  /** Real bytes of the partition (the reader's size, not what the boot sector claims). */
  readonly #partitionBytes: number;

  private constructor(reader: ByteReader, geometry: Geometry) {
    this.#volume = new NtfsVolume(reader, geometry.clusterSize);
    this.#partitionBytes = reader.size;
    this.#mft = new NtfsMft(this.#volume, geometry);
    this.#directories = new NtfsDirectories(this.#mft, this.#volume, geometry.clusterSize);
    this.info = {
      label: '',
      serial: geometry.serial,
      clusterSize: geometry.clusterSize,
      mftRecordSize: geometry.mftRecordSize,
      totalBytes: geometry.totalSectors * geometry.bytesPerSector,
    };
  }

  static async open(reader: ByteReader): Promise<NtfsReader> {
    if (reader.size < 512) unreadable(`the partition is only ${reader.size} bytes`);
    const ntfs = new NtfsReader(reader, parseBootSector(await reader.read(0, 512)));
    await ntfs.#mft.loadMft();
    ntfs.info.label = await ntfs.#readVolumeLabel();
    if ((await ntfs.#directories.openDirectoryIndex(await ntfs.#mft.readRecord(RECORD_ROOT))) === null) {
      unreadable('the root directory (MFT record 5) has no $I30 index');
    }
    return ntfs;
  }

  async listDir(path: string): Promise<NtfsDirEntry[] | null> {
    const record = await this.#resolvePath(path);
    if (record === null) return null;
    const index = await this.#directories.openDirectoryIndex(record);
    if (index === null) return null;
    const isRoot = record.recordNo === RECORD_ROOT;
    const byName = new Map<string, NtfsDirEntry>();
    for (const entry of await this.#directories.allIndexEntries(index)) {
      if (entry.namespace === NAMESPACE_DOS || entry.name === '.') continue;
      // Hide $MFT, $Bitmap, $Extend ... in the root; user folders like $Recycle.Bin stay visible.
      if (isRoot && entry.name.startsWith('$') && entry.recordNo < FIRST_USER_RECORD) continue;
      byName.set(entry.name, { name: entry.name, type: entry.isDirectory ? 'dir' : 'file' });
    }
    return [...byName.values()].sort(
      (a, b) => compareNamesIgnoringCase(a.name, b.name) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
    );
  }

  async readFile(path: string, opts: { maxBytes?: number } = {}): Promise<Buffer | null> {
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    const record = await this.#resolvePath(path);
    if (record === null || (record.flags & RECORD_FLAG_DIRECTORY) !== 0) return null;
    const stream = await this.#mft.openStream(record, ATTR_DATA, '');
    if (stream === null) return null;
    if (stream.kind === 'runs') {
      if ((stream.flags & ATTR_FLAG_ENCRYPTED) !== 0)
        unreadable(`${path} is EFS-encrypted and cannot be read without the user's key`, stream.volumeOffset);
      if ((stream.flags & ATTR_FLAG_COMPRESSION_MASK) !== 0)
        unreadable(`${path} is NTFS-compressed, which this reader does not decompress`, stream.volumeOffset);
    }
    const size = streamSize(stream);
    // A file holds no more bytes than its partition unless it is sparse, and what the inspector
    // reads (hives, config files) never is. Without this a damaged size or runs that map the same
    // clusters many times over make a small image allocate up to maxBytes of memory.
    if (size > this.#partitionBytes) {
      throw new MamoriError(
        'FILESYSTEM_UNREADABLE',
        `NTFS: ${path} claims ${size} bytes, more than its ${this.#partitionBytes}-byte partition holds; its size or data runs are damaged (sparse files this large are not read)`,
        { details: { path, size, partitionBytes: this.#partitionBytes } },
      );
    }
    if (size > maxBytes) {
      throw new MamoriError(
        'FILESYSTEM_UNREADABLE',
        `NTFS: ${path} is ${size} bytes, more than the ${maxBytes}-byte limit for reading a file`,
        { details: { path, size, maxBytes } },
      );
    }
    return this.#volume.readStream(stream, 0, size, path);
  }

  async #readVolumeLabel(): Promise<string> {
    const volume = await this.#mft.readRecord(RECORD_VOLUME);
    const name = volume.attributes.find((a) => a.type === ATTR_VOLUME_NAME);
    return name?.resident?.toString('utf16le') ?? '';
  }

  /** Case-insensitive, '/'-separated; '/' is the root. Null when a component is missing or a non-directory is crossed. */
  async #resolvePath(path: string): Promise<MftRecord | null> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.length > MAX_PATH_COMPONENTS) return null;
    let record = await this.#mft.readRecord(RECORD_ROOT);
    for (const part of parts) {
      const index = await this.#directories.openDirectoryIndex(record);
      if (index === null) return null;
      const entry = await this.#directories.findEntry(index, part);
      if (entry === null) return null;
      record = await this.#mft.readRecord(entry.recordNo);
      if (
        (record.flags & RECORD_FLAG_IN_USE) === 0 ||
        record.baseRecordNo !== record.recordNo ||
        (entry.sequence !== 0 && entry.sequence !== record.sequence)
      ) {
        unreadable(
          `the directory entry "${part}" points to MFT record ${entry.recordNo}, which is no longer that file (stale index)`,
          record.volumeOffset,
        );
      }
    }
    return record;
  }
}

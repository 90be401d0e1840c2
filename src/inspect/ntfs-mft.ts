import type { Geometry } from './ntfs-boot-sector.js';
import type { Run } from './ntfs-data-runs.js';
import { unreadable } from './ntfs-errors.js';
import {
  ATTR_ATTRIBUTE_LIST,
  ATTR_DATA,
  RECORD_FLAG_IN_USE,
  parseAttributeList,
  parseMftRecord,
  type Attribute,
  type MftRecord,
} from './ntfs-mft-record.js';
import { attributeToStream, joinExtents, streamSize, type Stream } from './ntfs-stream.js';
import type { NtfsVolume } from './ntfs-volume.js';

/** $ATTRIBUTE_LIST values are a few KiB in practice; anything huge is damage. */
const MAX_ATTRIBUTE_LIST_BYTES = 4 * 1024 * 1024;
const RECORD_CACHE_LIMIT = 1024;

export const RECORD_MFT = 0;
export const RECORD_VOLUME = 3;
export const RECORD_ROOT = 5;
/** Records below this number are the NTFS metafiles ($MFT ... $Extend and reserved ones). */
export const FIRST_USER_RECORD = 24;

/**
 * The $MFT as a table of records: located through record 0's own $DATA runs, read record by
 * record (cached), and the way to an attribute's full value even when an $ATTRIBUTE_LIST
 * spreads it over extension records.
 */
export class NtfsMft {
  readonly #volume: NtfsVolume;
  readonly #geometry: Geometry;
  readonly #clusterCount: number;
  #mftRuns: Run[] = [];
  #mftBytes = 0;
  readonly #recordCache = new Map<number, MftRecord>();

  constructor(volume: NtfsVolume, geometry: Geometry) {
    this.#volume = volume;
    this.#geometry = geometry;
    this.#clusterCount = Math.floor((geometry.totalSectors * geometry.bytesPerSector) / geometry.clusterSize);
  }

  /** Record 0 is read straight from the boot sector's MFT cluster; its $DATA runs then map every other record. */
  async loadMft(): Promise<void> {
    const { mftLcn, clusterSize, mftRecordSize } = this.#geometry;
    const offset = mftLcn * clusterSize;
    const mft = parseMftRecord(
      await this.#volume.readVolume(offset, mftRecordSize, 'MFT record 0'),
      RECORD_MFT,
      offset,
      this.#clusterCount,
    );
    const firstExtent = mft.attributes.find(
      (a) => a.type === ATTR_DATA && a.name === '' && a.nonResident?.lowVcn === 0,
    );
    if (firstExtent?.nonResident === undefined)
      unreadable('MFT record 0 has no non-resident $DATA describing the $MFT', offset);
    // Enough to reach the extension records if the $MFT itself needs an attribute list.
    this.#mftRuns = firstExtent.nonResident.runs;
    this.#mftBytes = firstExtent.nonResident.dataSize;
    this.#recordCache.set(RECORD_MFT, mft);
    const stream = await this.openStream(mft, ATTR_DATA, '');
    if (stream?.kind !== 'runs') unreadable('the $MFT $DATA attribute is unusable', offset);
    this.#mftRuns = stream.runs;
    this.#mftBytes = stream.dataSize;
    if (this.#mftBytes < (RECORD_ROOT + 1) * mftRecordSize)
      unreadable(`the $MFT is only ${this.#mftBytes} bytes`, offset);
  }

  async readRecord(recordNo: number): Promise<MftRecord> {
    const cached = this.#recordCache.get(recordNo);
    if (cached !== undefined) return cached;
    const size = this.#geometry.mftRecordSize;
    const start = recordNo * size;
    if (recordNo < 0 || start + size > this.#mftBytes)
      unreadable(`MFT record ${recordNo} is beyond the end of the ${this.#mftBytes}-byte $MFT`);
    const raw = await this.#volume.readRuns(this.#mftRuns, start, size, '$MFT');
    const record = parseMftRecord(raw, recordNo, this.#volume.volumeOffsetOf(this.#mftRuns, start), this.#clusterCount);
    if (this.#recordCache.size >= RECORD_CACHE_LIMIT) this.#recordCache.clear();
    this.#recordCache.set(recordNo, record);
    return record;
  }

  /**
   * All parts of one attribute of a file. Without an $ATTRIBUTE_LIST they are in the base
   * record; with one, the list names the record holding each part (extension records never
   * carry their own list, so there is no recursion to bound).
   */
  async #attributeParts(base: MftRecord, type: number, name: string): Promise<Attribute[]> {
    const listAttribute = base.attributes.find((a) => a.type === ATTR_ATTRIBUTE_LIST);
    const matches = (a: { type: number; name: string }): boolean => a.type === type && a.name === name;
    if (listAttribute === undefined) return base.attributes.filter(matches);
    const what = `$ATTRIBUTE_LIST of MFT record ${base.recordNo}`;
    const listStream = attributeToStream(listAttribute, what);
    if (streamSize(listStream) > MAX_ATTRIBUTE_LIST_BYTES)
      unreadable(`${what} is implausibly large`, listAttribute.volumeOffset);
    const list = parseAttributeList(
      await this.#volume.readStream(listStream, 0, streamSize(listStream), what),
      listAttribute.volumeOffset,
    );
    const parts: Attribute[] = [];
    for (const entry of list.filter(matches)) {
      const holder = entry.recordNo === base.recordNo ? base : await this.readRecord(entry.recordNo);
      if (holder.baseRecordNo !== base.recordNo || (holder.flags & RECORD_FLAG_IN_USE) === 0) {
        unreadable(
          `${what} points to MFT record ${entry.recordNo}, which does not belong to this file`,
          holder.volumeOffset,
        );
      }
      const part = holder.attributes.find((a) => matches(a) && a.id === entry.id);
      if (part === undefined)
        unreadable(`${what} names an attribute missing from MFT record ${entry.recordNo}`, holder.volumeOffset);
      parts.push(part);
    }
    return parts;
  }

  /** A named or unnamed attribute as one stream; null when the file has no such attribute. */
  async openStream(record: MftRecord, type: number, name: string): Promise<Stream | null> {
    const parts = await this.#attributeParts(record, type, name);
    const what = `attribute 0x${type.toString(16)} of MFT record ${record.recordNo}`;
    const first = parts[0];
    if (first === undefined) return null;
    if (first.resident !== undefined) {
      if (parts.length > 1) unreadable(`${what} is resident but has several parts`, first.volumeOffset);
      return { kind: 'resident', value: first.resident };
    }
    return joinExtents(parts, what);
  }
}

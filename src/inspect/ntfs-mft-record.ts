import { decodeRuns, type Run } from './ntfs-data-runs.js';
import { unreadable } from './ntfs-errors.js';
import { applyFixups } from './ntfs-fixups.js';
import { refRecord, s64, u64 } from './ntfs-integers.js';

// ---------------------------------------------------------------------------------------------
// MFT records and their attributes

const MAX_ATTRIBUTES_PER_RECORD = 512;

export const ATTR_ATTRIBUTE_LIST = 0x20;
export const ATTR_FILE_NAME = 0x30;
export const ATTR_VOLUME_NAME = 0x60;
export const ATTR_DATA = 0x80;
export const ATTR_INDEX_ROOT = 0x90;
export const ATTR_INDEX_ALLOCATION = 0xa0;
const ATTR_END = 0xffffffff;

export const ATTR_FLAG_COMPRESSION_MASK = 0x00ff;
export const ATTR_FLAG_ENCRYPTED = 0x4000;

export const RECORD_FLAG_IN_USE = 0x0001;
export const RECORD_FLAG_DIRECTORY = 0x0002;

export interface MftRecord {
  recordNo: number;
  /** Where the record starts on the volume, for messages. */
  volumeOffset: number;
  sequence: number;
  flags: number;
  /** Record number of the base record; equals recordNo for base records. */
  baseRecordNo: number;
  attributes: Attribute[];
}

interface NonResidentPart {
  lowVcn: number;
  highVcn: number;
  dataSize: number;
  initializedSize: number;
  runs: Run[];
}

export interface Attribute {
  type: number;
  name: string;
  flags: number;
  id: number;
  volumeOffset: number;
  resident: Buffer | undefined;
  nonResident: NonResidentPart | undefined;
}

function parseAttribute(
  buf: Buffer,
  pos: number,
  length: number,
  clusterCount: number,
  volumeOffset: number,
): Attribute {
  const at = volumeOffset + pos;
  const nonResidentFlag = buf.readUInt8(pos + 8);
  const nameLength = buf.readUInt8(pos + 9);
  const nameOffset = buf.readUInt16LE(pos + 10);
  if (nameLength > 0 && nameOffset + 2 * nameLength > length) unreadable('attribute name runs past the attribute', at);
  const base = {
    type: buf.readUInt32LE(pos),
    name: buf.toString('utf16le', pos + nameOffset, pos + nameOffset + 2 * nameLength),
    flags: buf.readUInt16LE(pos + 12),
    id: buf.readUInt16LE(pos + 14),
    volumeOffset: at,
  };
  if (nonResidentFlag === 0) {
    if (length < 24) unreadable('resident attribute header is truncated', at);
    const valueLength = buf.readUInt32LE(pos + 16);
    const valueOffset = buf.readUInt16LE(pos + 20);
    if (valueOffset + valueLength > length) unreadable('resident attribute value runs past the attribute', at);
    return {
      ...base,
      resident: buf.subarray(pos + valueOffset, pos + valueOffset + valueLength),
      nonResident: undefined,
    };
  }
  if (length < 64) unreadable('non-resident attribute header is truncated', at);
  const lowVcn = s64(buf, pos + 16);
  const mappingPairsOffset = buf.readUInt16LE(pos + 32);
  if (mappingPairsOffset < 64 || mappingPairsOffset > length)
    unreadable('non-resident attribute has its data runs outside it', at);
  const dataSize = s64(buf, pos + 48);
  const initializedSize = s64(buf, pos + 56);
  if (lowVcn < 0 || dataSize < 0 || initializedSize < 0) unreadable('non-resident attribute has negative sizes', at);
  return {
    ...base,
    resident: undefined,
    nonResident: {
      lowVcn,
      highVcn: s64(buf, pos + 24), // -1 for an empty attribute
      dataSize,
      initializedSize: Math.min(initializedSize, dataSize),
      runs: decodeRuns(buf, pos + mappingPairsOffset, pos + length, lowVcn, clusterCount, volumeOffset),
    },
  };
}

export function parseMftRecord(raw: Buffer, recordNo: number, volumeOffset: number, clusterCount: number): MftRecord {
  const what = `MFT record ${recordNo}`;
  const buf = applyFixups(raw, 'FILE', what, volumeOffset);
  const firstAttribute = buf.readUInt16LE(0x14);
  const bytesUsed = Math.min(buf.readUInt32LE(0x18), buf.length);
  if (firstAttribute < 0x18 || firstAttribute + 4 > bytesUsed)
    unreadable(`${what} has its attributes outside it`, volumeOffset);
  const attributes: Attribute[] = [];
  let pos = firstAttribute;
  for (let count = 0; ; count++) {
    if (count > MAX_ATTRIBUTES_PER_RECORD) unreadable(`${what} has too many attributes`, volumeOffset);
    if (pos + 4 > bytesUsed) unreadable(`${what} has no attribute end marker`, volumeOffset + pos);
    if (buf.readUInt32LE(pos) === ATTR_END) break;
    if (pos + 16 > bytesUsed) unreadable(`${what} has a truncated attribute header`, volumeOffset + pos);
    const length = buf.readUInt32LE(pos + 4);
    if (length < 16 || pos + length > bytesUsed)
      unreadable(`${what} has an attribute of impossible length ${length}`, volumeOffset + pos);
    attributes.push(parseAttribute(buf, pos, length, clusterCount, volumeOffset));
    pos += length;
  }
  // An all-zero base reference marks a base record ($MFT extension records point to record 0 with a non-zero sequence).
  const isBase = buf.readBigUInt64LE(0x20) === 0n;
  return {
    recordNo,
    volumeOffset,
    sequence: buf.readUInt16LE(0x10),
    flags: buf.readUInt16LE(0x16),
    baseRecordNo: isBase ? recordNo : refRecord(buf, 0x20),
    attributes,
  };
}

interface AttributeListEntry {
  type: number;
  name: string;
  startVcn: number;
  recordNo: number;
  id: number;
}

export function parseAttributeList(value: Buffer, volumeOffset: number): AttributeListEntry[] {
  const entries: AttributeListEntry[] = [];
  let pos = 0;
  while (pos + 0x1a <= value.length) {
    const length = value.readUInt16LE(pos + 4);
    const nameLength = value.readUInt8(pos + 6);
    const nameOffset = value.readUInt8(pos + 7);
    if (length < 0x1a || pos + length > value.length || nameOffset + 2 * nameLength > length) {
      unreadable('$ATTRIBUTE_LIST entry is malformed', volumeOffset);
    }
    entries.push({
      type: value.readUInt32LE(pos),
      name: value.toString('utf16le', pos + nameOffset, pos + nameOffset + 2 * nameLength),
      startVcn: u64(value, pos + 8),
      recordNo: refRecord(value, pos + 16),
      id: value.readUInt16LE(pos + 24),
    });
    pos += length;
  }
  return entries;
}

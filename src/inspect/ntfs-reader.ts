import type { ByteReader } from './byte-reader.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * A read-only NTFS reader: enough to find a Windows installation, list directories and read
 * files such as the registry hives. It walks only the metadata on the way to what it is asked
 * for (boot sector → $MFT runs → the directory B+trees along one path → one file's runs), so it
 * stays fast on big volumes where every read may be a network round trip.
 *
 * Layout notes follow the public NTFS documentation (the Linux-NTFS project's description of
 * the on-disk format); nothing here is taken from another implementation.
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

const HINT = 'the NTFS metadata looks damaged; run chkdsk (or ntfsfix) on a copy of the disk, never on the source';
const DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024;

/** Reads larger than this are split: block-device transports (NBD) cap a single request. */
const MAX_SINGLE_READ = 8 * 1024 * 1024;
/** $ATTRIBUTE_LIST values are a few KiB in practice; anything huge is damage. */
const MAX_ATTRIBUTE_LIST_BYTES = 4 * 1024 * 1024;
const MAX_ATTRIBUTES_PER_RECORD = 512;
const MAX_INDEX_ENTRIES_PER_NODE = 8192;
const MAX_TREE_DEPTH = 16;
const MAX_PATH_COMPONENTS = 256;
const RECORD_CACHE_LIMIT = 1024;
const INDEX_BLOCK_CACHE_LIMIT = 2048;

const RECORD_MFT = 0;
const RECORD_VOLUME = 3;
const RECORD_ROOT = 5;
/** Records below this number are the NTFS metafiles ($MFT ... $Extend and reserved ones). */
const FIRST_USER_RECORD = 24;

const ATTR_ATTRIBUTE_LIST = 0x20;
const ATTR_FILE_NAME = 0x30;
const ATTR_VOLUME_NAME = 0x60;
const ATTR_DATA = 0x80;
const ATTR_INDEX_ROOT = 0x90;
const ATTR_INDEX_ALLOCATION = 0xa0;
const ATTR_END = 0xffffffff;

const ATTR_FLAG_COMPRESSION_MASK = 0x00ff;
const ATTR_FLAG_ENCRYPTED = 0x4000;

const RECORD_FLAG_IN_USE = 0x0001;
const RECORD_FLAG_DIRECTORY = 0x0002;

const INDEX_ENTRY_HAS_CHILD = 0x01;
const INDEX_ENTRY_LAST = 0x02;
/** $FILE_NAME flag "has a $I30 index", i.e. the name belongs to a directory. */
const FILE_NAME_FLAG_DIRECTORY = 0x10000000;
const NAMESPACE_DOS = 2;

const I30 = '$I30';

/** `offset` is where on the partition the bad structure lies; negative or absent when unknown. */
function unreadable(message: string, offset?: number): never {
  const known = offset !== undefined && offset >= 0;
  const where = known ? ` (byte ${offset} of the partition)` : '';
  throw new MamoriError('FILESYSTEM_UNREADABLE', `NTFS: ${message}${where}; ${HINT}`, known ? { details: { offset } } : {});
}

// ---------------------------------------------------------------------------------------------
// Little-endian integers wider than 32 bits: NTFS stores 64-bit fields everywhere, but every
// value that matters fits in a JS number on any real volume; larger ones mean damage.

function readIntLE(buf: Buffer, pos: number, bytes: number, signed: boolean): number {
  let value = 0n;
  for (let i = bytes - 1; i >= 0; i--) value = (value << 8n) | BigInt(buf[pos + i] ?? 0);
  if (signed && bytes > 0 && (buf[pos + bytes - 1] ?? 0) & 0x80) value -= 1n << BigInt(bytes * 8);
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    unreadable(`a ${bytes}-byte field holds ${value}, too large to be real`);
  }
  return Number(value);
}

const u64 = (buf: Buffer, pos: number): number => readIntLE(buf, pos, 8, false);
const s64 = (buf: Buffer, pos: number): number => readIntLE(buf, pos, 8, true);
/** MFT references: 48-bit record number + 16-bit sequence number. */
const refRecord = (buf: Buffer, pos: number): number => readIntLE(buf, pos, 6, false);
const refSequence = (buf: Buffer, pos: number): number => buf.readUInt16LE(pos + 6);

function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(n) && (n & (n - 1)) === 0;
}

// ---------------------------------------------------------------------------------------------
// Names: NTFS compares names by upper-casing each UTF-16 code unit through the volume's $UpCase
// table. Upper-casing code unit by code unit with JavaScript's rules matches that table for
// everything a Windows installation path contains; lookups of non-ASCII names fall back to a
// full scan of that one directory in case the two tables disagree on ordering.

let upcaseTable: Uint16Array | undefined;

function upcaseUnit(unit: number): number {
  if (upcaseTable === undefined) {
    upcaseTable = new Uint16Array(0x10000);
    for (let u = 0; u < 0x10000; u++) {
      const upper = String.fromCharCode(u).toUpperCase();
      upcaseTable[u] = upper.length === 1 ? upper.charCodeAt(0) : u;
    }
  }
  return upcaseTable[unit] ?? unit;
}

function compareNamesIgnoringCase(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = upcaseUnit(a.charCodeAt(i)) - upcaseUnit(b.charCodeAt(i));
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

// ---------------------------------------------------------------------------------------------
// Boot sector

interface Geometry {
  bytesPerSector: number;
  clusterSize: number;
  totalSectors: number;
  mftLcn: number;
  mftRecordSize: number;
  serial: string;
}

/** Clusters-per-record bytes: positive = that many clusters, negative n = 2^|n| bytes. */
function recordSizeFromBootByte(raw: number, clusterSize: number): number {
  const signed = raw > 0x7f ? raw - 0x100 : raw;
  return signed < 0 ? 2 ** -signed : signed * clusterSize;
}

function parseBootSector(boot: Buffer): Geometry {
  if (boot.length < 512 || boot.toString('latin1', 3, 11) !== 'NTFS    ') {
    unreadable('no NTFS boot sector ("NTFS    " at byte 3)', 0);
  }
  const bytesPerSector = boot.readUInt16LE(0x0b);
  if (!isPowerOfTwo(bytesPerSector) || bytesPerSector < 256 || bytesPerSector > 4096) {
    unreadable(`boot sector gives ${bytesPerSector} bytes per sector`, 0x0b);
  }
  // Values above 0x80 encode big clusters as a negative exponent: 2^(256 - value) sectors.
  const rawSectorsPerCluster = boot.readUInt8(0x0d);
  const sectorsPerCluster = rawSectorsPerCluster > 0x80 ? 2 ** (0x100 - rawSectorsPerCluster) : rawSectorsPerCluster;
  const clusterSize = bytesPerSector * sectorsPerCluster;
  if (!isPowerOfTwo(sectorsPerCluster) || clusterSize > 2 * 1024 * 1024) {
    unreadable(`boot sector gives ${rawSectorsPerCluster} as sectors per cluster`, 0x0d);
  }
  const mftRecordSize = recordSizeFromBootByte(boot.readUInt8(0x40), clusterSize);
  if (!isPowerOfTwo(mftRecordSize) || mftRecordSize < 256 || mftRecordSize > 65536) {
    unreadable(`boot sector gives an MFT record size of ${mftRecordSize} bytes`, 0x40);
  }
  const totalSectors = u64(boot, 0x28);
  const mftLcn = u64(boot, 0x30);
  if (totalSectors === 0 || mftLcn * sectorsPerCluster >= totalSectors) {
    unreadable(`boot sector places the $MFT at cluster ${mftLcn}, outside the ${totalSectors}-sector volume`, 0x30);
  }
  const serial = boot.readBigUInt64LE(0x48).toString(16).toUpperCase().padStart(16, '0');
  return { bytesPerSector, clusterSize, totalSectors, mftLcn, mftRecordSize, serial };
}

// ---------------------------------------------------------------------------------------------
// Multi-sector records (MFT records, index blocks) carry an update sequence: the last two bytes
// of every 512-byte stride are replaced on disk by a check value and the originals live in the
// update sequence array. A stride whose check value differs was torn or damaged.

function applyFixups(raw: Buffer, magic: string, what: string, volumeOffset: number): Buffer {
  const buf = Buffer.from(raw); // a copy: the reader may hand out views of its own memory
  if (buf.toString('latin1', 0, 4) !== magic) {
    const found = buf.toString('latin1', 0, 4);
    unreadable(`${what} lacks its "${magic}" signature${found === 'BAAD' ? ' (chkdsk marked it bad)' : ''}`, volumeOffset);
  }
  const usaOffset = buf.readUInt16LE(4);
  const usaCount = buf.readUInt16LE(6);
  const strides = usaCount - 1;
  const stride = strides > 0 ? buf.length / strides : 0;
  if (strides < 1 || !isPowerOfTwo(stride) || stride < 256 || usaOffset % 2 !== 0 || usaOffset < 8 || usaOffset + 2 * usaCount > buf.length) {
    unreadable(`${what} has an invalid update sequence array (offset ${usaOffset}, count ${usaCount})`, volumeOffset);
  }
  const check = buf.readUInt16LE(usaOffset);
  for (let i = 1; i <= strides; i++) {
    const tail = i * stride - 2;
    if (buf.readUInt16LE(tail) !== check) {
      unreadable(`${what} fails its update sequence check in sector ${i - 1} (torn write or damage)`, volumeOffset + tail);
    }
    buf.writeUInt16LE(buf.readUInt16LE(usaOffset + 2 * i), tail);
  }
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Data runs (mapping pairs)

interface Run {
  /** First virtual cluster of the run within its attribute. */
  vcn: number;
  /** First logical cluster on the volume; null for a sparse run (reads as zeros). */
  lcn: number | null;
  length: number;
}

/** Each pair: a header byte (low nibble = size of length, high nibble = size of LCN delta), then the two fields. */
function decodeRuns(buf: Buffer, start: number, end: number, firstVcn: number, clusterCount: number, volumeOffset: number): Run[] {
  const runs: Run[] = [];
  let pos = start;
  let vcn = firstVcn;
  let lcn = 0;
  while (pos < end) {
    const header = buf[pos] ?? 0;
    if (header === 0) return runs;
    const lengthBytes = header & 0x0f;
    const offsetBytes = header >> 4;
    if (lengthBytes === 0 || lengthBytes > 8 || offsetBytes > 8 || pos + 1 + lengthBytes + offsetBytes > end) {
      unreadable(`malformed data run header 0x${header.toString(16)}`, volumeOffset + pos);
    }
    const length = readIntLE(buf, pos + 1, lengthBytes, false);
    if (length <= 0) unreadable('data run of zero length', volumeOffset + pos);
    let runLcn: number | null = null;
    if (offsetBytes > 0) {
      lcn += readIntLE(buf, pos + 1 + lengthBytes, offsetBytes, true);
      if (lcn < 0 || lcn + length > clusterCount) {
        unreadable(`data run points to clusters ${lcn}..${lcn + length - 1}, outside the ${clusterCount}-cluster volume`, volumeOffset + pos);
      }
      runLcn = lcn;
    }
    runs.push({ vcn, lcn: runLcn, length });
    vcn += length;
    pos += 1 + lengthBytes + offsetBytes;
  }
  unreadable('data runs are not terminated', volumeOffset + end);
}

// ---------------------------------------------------------------------------------------------
// MFT records and their attributes

interface MftRecord {
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

interface Attribute {
  type: number;
  name: string;
  flags: number;
  id: number;
  volumeOffset: number;
  resident: Buffer | undefined;
  nonResident: NonResidentPart | undefined;
}

function parseAttribute(buf: Buffer, pos: number, length: number, clusterCount: number, volumeOffset: number): Attribute {
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
    return { ...base, resident: buf.subarray(pos + valueOffset, pos + valueOffset + valueLength), nonResident: undefined };
  }
  if (length < 64) unreadable('non-resident attribute header is truncated', at);
  const lowVcn = s64(buf, pos + 16);
  const mappingPairsOffset = buf.readUInt16LE(pos + 32);
  if (mappingPairsOffset < 64 || mappingPairsOffset > length) unreadable('non-resident attribute has its data runs outside it', at);
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

function parseMftRecord(raw: Buffer, recordNo: number, volumeOffset: number, clusterCount: number): MftRecord {
  const what = `MFT record ${recordNo}`;
  const buf = applyFixups(raw, 'FILE', what, volumeOffset);
  const firstAttribute = buf.readUInt16LE(0x14);
  const bytesUsed = Math.min(buf.readUInt32LE(0x18), buf.length);
  if (firstAttribute < 0x18 || firstAttribute + 4 > bytesUsed) unreadable(`${what} has its attributes outside it`, volumeOffset);
  const attributes: Attribute[] = [];
  let pos = firstAttribute;
  for (let count = 0; ; count++) {
    if (count > MAX_ATTRIBUTES_PER_RECORD) unreadable(`${what} has too many attributes`, volumeOffset);
    if (pos + 4 > bytesUsed) unreadable(`${what} has no attribute end marker`, volumeOffset + pos);
    if (buf.readUInt32LE(pos) === ATTR_END) break;
    if (pos + 16 > bytesUsed) unreadable(`${what} has a truncated attribute header`, volumeOffset + pos);
    const length = buf.readUInt32LE(pos + 4);
    if (length < 16 || pos + length > bytesUsed) unreadable(`${what} has an attribute of impossible length ${length}`, volumeOffset + pos);
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

function parseAttributeList(value: Buffer, volumeOffset: number): AttributeListEntry[] {
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

// ---------------------------------------------------------------------------------------------
// Streams: an attribute's value, either in the record or spread over runs (possibly across
// several records' extents joined through the $ATTRIBUTE_LIST).

type Stream =
  | { kind: 'resident'; value: Buffer }
  | { kind: 'runs'; runs: Run[]; dataSize: number; initializedSize: number; flags: number; volumeOffset: number };

function streamSize(stream: Stream): number {
  return stream.kind === 'resident' ? stream.value.length : stream.dataSize;
}

/** Joins a non-resident attribute's extents, checking they follow one another without gaps. */
function joinExtents(parts: Attribute[], what: string): Stream {
  const sorted = [...parts].sort((a, b) => (a.nonResident?.lowVcn ?? 0) - (b.nonResident?.lowVcn ?? 0));
  const first = sorted[0];
  if (first?.nonResident === undefined || first.nonResident.lowVcn !== 0) unreadable(`${what} has no first extent`, first?.volumeOffset);
  const runs: Run[] = [];
  let nextVcn = 0;
  let flags = 0;
  for (const part of sorted) {
    const nr = part.nonResident;
    if (nr === undefined) unreadable(`${what} mixes resident and non-resident parts`, part.volumeOffset);
    if (nr.lowVcn !== nextVcn) unreadable(`${what} has an extent starting at VCN ${nr.lowVcn} where ${nextVcn} was expected`, part.volumeOffset);
    runs.push(...nr.runs);
    nextVcn = Math.max(nr.highVcn + 1, nr.lowVcn);
    flags |= part.flags;
  }
  return { kind: 'runs', runs, dataSize: first.nonResident.dataSize, initializedSize: first.nonResident.initializedSize, flags, volumeOffset: first.volumeOffset };
}

function attributeToStream(attribute: Attribute, what: string): Stream {
  if (attribute.resident !== undefined) return { kind: 'resident', value: attribute.resident };
  return joinExtents([attribute], what);
}

// ---------------------------------------------------------------------------------------------
// Directory indexes ($I30 B+tree keyed by $FILE_NAME)

interface IndexEntry {
  recordNo: number;
  sequence: number;
  name: string;
  namespace: number;
  isDirectory: boolean;
  /** VCN of the child node holding names that sort before this entry. */
  childVcn: number | null;
  isLast: boolean;
}

/** Parses the entries after an index header (the one in $INDEX_ROOT or in an INDX block). */
function parseIndexEntries(buf: Buffer, headerPos: number, what: string, volumeOffset: number): IndexEntry[] {
  if (headerPos + 16 > buf.length) unreadable(`${what} has a truncated index header`, volumeOffset + headerPos);
  const start = headerPos + buf.readUInt32LE(headerPos);
  const end = Math.min(headerPos + buf.readUInt32LE(headerPos + 4), buf.length);
  const entries: IndexEntry[] = [];
  let pos = start;
  for (let count = 0; count < MAX_INDEX_ENTRIES_PER_NODE; count++) {
    if (pos + 16 > end) unreadable(`${what} ends without a last index entry`, volumeOffset + pos);
    const length = buf.readUInt16LE(pos + 8);
    const keyLength = buf.readUInt16LE(pos + 10);
    const flags = buf.readUInt16LE(pos + 12);
    const hasChild = (flags & INDEX_ENTRY_HAS_CHILD) !== 0;
    if (length < 16 + (hasChild ? 8 : 0) || pos + length > end || 16 + keyLength > length) {
      unreadable(`${what} has an index entry of impossible length ${length}`, volumeOffset + pos);
    }
    const isLast = (flags & INDEX_ENTRY_LAST) !== 0;
    const childVcn = hasChild ? s64(buf, pos + length - 8) : null;
    entries.push({ ...(isLast ? emptyKey() : parseFileNameKey(buf, pos + 16, keyLength, what, volumeOffset)), recordNo: refRecord(buf, pos), sequence: refSequence(buf, pos), childVcn, isLast });
    if (isLast) return entries;
    pos += length;
  }
  unreadable(`${what} has too many index entries`, volumeOffset + start);
}

function emptyKey(): Pick<IndexEntry, 'name' | 'namespace' | 'isDirectory'> {
  return { name: '', namespace: 0, isDirectory: false };
}

/** The key of an $I30 entry is a copy of the file's $FILE_NAME value. */
function parseFileNameKey(buf: Buffer, pos: number, keyLength: number, what: string, volumeOffset: number): Pick<IndexEntry, 'name' | 'namespace' | 'isDirectory'> {
  if (keyLength < 0x42) unreadable(`${what} has a file name key of only ${keyLength} bytes`, volumeOffset + pos);
  const nameLength = buf.readUInt8(pos + 0x40);
  if (0x42 + 2 * nameLength > keyLength) unreadable(`${what} has a file name longer than its key`, volumeOffset + pos);
  return {
    name: buf.toString('utf16le', pos + 0x42, pos + 0x42 + 2 * nameLength),
    namespace: buf.readUInt8(pos + 0x41),
    isDirectory: (buf.readUInt32LE(pos + 0x38) & FILE_NAME_FLAG_DIRECTORY) !== 0,
  };
}

interface DirectoryIndex {
  recordNo: number;
  rootEntries: IndexEntry[];
  blockSize: number;
  /** Bytes per VCN of the allocation: a cluster, or 512 when index blocks are smaller than a cluster. */
  vcnSize: number;
  allocation: Stream | null;
}

// ---------------------------------------------------------------------------------------------

export class NtfsReader {
  readonly info: NtfsInfo;
  private readonly reader: ByteReader;
  private readonly geometry: Geometry;
  private readonly clusterCount: number;
  private mftRuns: Run[] = [];
  private mftBytes = 0;
  private readonly recordCache = new Map<number, MftRecord>();
  private readonly indexBlockCache = new Map<string, Buffer>();

  private constructor(reader: ByteReader, geometry: Geometry) {
    this.reader = reader;
    this.geometry = geometry;
    this.clusterCount = Math.floor((geometry.totalSectors * geometry.bytesPerSector) / geometry.clusterSize);
    this.info = { label: '', serial: geometry.serial, clusterSize: geometry.clusterSize, mftRecordSize: geometry.mftRecordSize, totalBytes: geometry.totalSectors * geometry.bytesPerSector };
  }

  static async open(reader: ByteReader): Promise<NtfsReader> {
    if (reader.size < 512) unreadable(`the partition is only ${reader.size} bytes`);
    const ntfs = new NtfsReader(reader, parseBootSector(await reader.read(0, 512)));
    await ntfs.loadMft();
    ntfs.info.label = await ntfs.readVolumeLabel();
    if ((await ntfs.openDirectoryIndex(await ntfs.readRecord(RECORD_ROOT))) === null) {
      unreadable('the root directory (MFT record 5) has no $I30 index');
    }
    return ntfs;
  }

  async listDir(path: string): Promise<NtfsDirEntry[] | null> {
    const record = await this.resolvePath(path);
    if (record === null) return null;
    const index = await this.openDirectoryIndex(record);
    if (index === null) return null;
    const isRoot = record.recordNo === RECORD_ROOT;
    const byName = new Map<string, NtfsDirEntry>();
    for (const entry of await this.allIndexEntries(index)) {
      if (entry.namespace === NAMESPACE_DOS || entry.name === '.') continue;
      // Hide $MFT, $Bitmap, $Extend ... in the root; user folders like $Recycle.Bin stay visible.
      if (isRoot && entry.name.startsWith('$') && entry.recordNo < FIRST_USER_RECORD) continue;
      byName.set(entry.name, { name: entry.name, type: entry.isDirectory ? 'dir' : 'file' });
    }
    return [...byName.values()].sort((a, b) => compareNamesIgnoringCase(a.name, b.name) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async readFile(path: string, opts: { maxBytes?: number } = {}): Promise<Buffer | null> {
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    const record = await this.resolvePath(path);
    if (record === null || (record.flags & RECORD_FLAG_DIRECTORY) !== 0) return null;
    const stream = await this.openStream(record, ATTR_DATA, '');
    if (stream === null) return null;
    if (stream.kind === 'runs') {
      if ((stream.flags & ATTR_FLAG_ENCRYPTED) !== 0) unreadable(`${path} is EFS-encrypted and cannot be read without the user's key`, stream.volumeOffset);
      if ((stream.flags & ATTR_FLAG_COMPRESSION_MASK) !== 0) unreadable(`${path} is NTFS-compressed, which this reader does not decompress`, stream.volumeOffset);
    }
    const size = streamSize(stream);
    if (size > maxBytes) {
      throw new MamoriError('FILESYSTEM_UNREADABLE', `NTFS: ${path} is ${size} bytes, more than the ${maxBytes}-byte limit for reading a file`, { details: { path, size, maxBytes } });
    }
    return this.readStream(stream, 0, size, path);
  }

  // --- $MFT and records -------------------------------------------------------------------------

  /** Record 0 is read straight from the boot sector's MFT cluster; its $DATA runs then map every other record. */
  private async loadMft(): Promise<void> {
    const { mftLcn, clusterSize, mftRecordSize } = this.geometry;
    const offset = mftLcn * clusterSize;
    const mft = parseMftRecord(await this.readVolume(offset, mftRecordSize, 'MFT record 0'), RECORD_MFT, offset, this.clusterCount);
    const firstExtent = mft.attributes.find((a) => a.type === ATTR_DATA && a.name === '' && a.nonResident?.lowVcn === 0);
    if (firstExtent?.nonResident === undefined) unreadable('MFT record 0 has no non-resident $DATA describing the $MFT', offset);
    // Enough to reach the extension records if the $MFT itself needs an attribute list.
    this.mftRuns = firstExtent.nonResident.runs;
    this.mftBytes = firstExtent.nonResident.dataSize;
    this.recordCache.set(RECORD_MFT, mft);
    const stream = await this.openStream(mft, ATTR_DATA, '');
    if (stream?.kind !== 'runs') unreadable('the $MFT $DATA attribute is unusable', offset);
    this.mftRuns = stream.runs;
    this.mftBytes = stream.dataSize;
    if (this.mftBytes < (RECORD_ROOT + 1) * mftRecordSize) unreadable(`the $MFT is only ${this.mftBytes} bytes`, offset);
  }

  private async readRecord(recordNo: number): Promise<MftRecord> {
    const cached = this.recordCache.get(recordNo);
    if (cached !== undefined) return cached;
    const size = this.geometry.mftRecordSize;
    const start = recordNo * size;
    if (recordNo < 0 || start + size > this.mftBytes) unreadable(`MFT record ${recordNo} is beyond the end of the ${this.mftBytes}-byte $MFT`);
    const raw = await this.readRuns(this.mftRuns, start, size, '$MFT');
    const record = parseMftRecord(raw, recordNo, this.volumeOffsetOf(this.mftRuns, start), this.clusterCount);
    if (this.recordCache.size >= RECORD_CACHE_LIMIT) this.recordCache.clear();
    this.recordCache.set(recordNo, record);
    return record;
  }

  private async readVolumeLabel(): Promise<string> {
    const volume = await this.readRecord(RECORD_VOLUME);
    const name = volume.attributes.find((a) => a.type === ATTR_VOLUME_NAME);
    return name?.resident?.toString('utf16le') ?? '';
  }

  /**
   * All parts of one attribute of a file. Without an $ATTRIBUTE_LIST they are in the base
   * record; with one, the list names the record holding each part (extension records never
   * carry their own list, so there is no recursion to bound).
   */
  private async attributeParts(base: MftRecord, type: number, name: string): Promise<Attribute[]> {
    const listAttribute = base.attributes.find((a) => a.type === ATTR_ATTRIBUTE_LIST);
    const matches = (a: { type: number; name: string }): boolean => a.type === type && a.name === name;
    if (listAttribute === undefined) return base.attributes.filter(matches);
    const what = `$ATTRIBUTE_LIST of MFT record ${base.recordNo}`;
    const listStream = attributeToStream(listAttribute, what);
    if (streamSize(listStream) > MAX_ATTRIBUTE_LIST_BYTES) unreadable(`${what} is implausibly large`, listAttribute.volumeOffset);
    const list = parseAttributeList(await this.readStream(listStream, 0, streamSize(listStream), what), listAttribute.volumeOffset);
    const parts: Attribute[] = [];
    for (const entry of list.filter(matches)) {
      const holder = entry.recordNo === base.recordNo ? base : await this.readRecord(entry.recordNo);
      if (holder.baseRecordNo !== base.recordNo || (holder.flags & RECORD_FLAG_IN_USE) === 0) {
        unreadable(`${what} points to MFT record ${entry.recordNo}, which does not belong to this file`, holder.volumeOffset);
      }
      const part = holder.attributes.find((a) => matches(a) && a.id === entry.id);
      if (part === undefined) unreadable(`${what} names an attribute missing from MFT record ${entry.recordNo}`, holder.volumeOffset);
      parts.push(part);
    }
    return parts;
  }

  /** A named or unnamed attribute as one stream; null when the file has no such attribute. */
  private async openStream(record: MftRecord, type: number, name: string): Promise<Stream | null> {
    const parts = await this.attributeParts(record, type, name);
    const what = `attribute 0x${type.toString(16)} of MFT record ${record.recordNo}`;
    const first = parts[0];
    if (first === undefined) return null;
    if (first.resident !== undefined) {
      if (parts.length > 1) unreadable(`${what} is resident but has several parts`, first.volumeOffset);
      return { kind: 'resident', value: first.resident };
    }
    return joinExtents(parts, what);
  }

  // --- reading bytes ----------------------------------------------------------------------------

  private async readVolume(offset: number, length: number, what: string): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.reader.size) {
      unreadable(`${what} (${length} bytes) lies beyond the end of the ${this.reader.size}-byte partition`, offset);
    }
    const buf = await this.reader.read(offset, length);
    if (buf.length !== length) unreadable(`short read of ${what}: ${buf.length} of ${length} bytes`, offset);
    return buf;
  }

  /** First run covering `vcn` (runs are sorted by VCN), or -1. */
  private static findRun(runs: Run[], vcn: number): number {
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const run = runs[mid] as Run;
      if (vcn < run.vcn) hi = mid - 1;
      else if (vcn >= run.vcn + run.length) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  private volumeOffsetOf(runs: Run[], byteOffset: number): number {
    const cs = this.geometry.clusterSize;
    const run = runs[NtfsReader.findRun(runs, Math.floor(byteOffset / cs))];
    return run?.lcn == null ? -1 : run.lcn * cs + (byteOffset - run.vcn * cs);
  }

  /** Bytes [offset, offset + length) of a non-resident value; sparse runs read as zeros. */
  private async readRuns(runs: Run[], offset: number, length: number, what: string): Promise<Buffer> {
    const cs = this.geometry.clusterSize;
    const out = Buffer.alloc(length);
    let done = 0;
    let index = NtfsReader.findRun(runs, Math.floor(offset / cs));
    while (done < length) {
      const run = runs[index];
      const pos = offset + done;
      if (run === undefined || pos < run.vcn * cs || pos >= (run.vcn + run.length) * cs) {
        unreadable(`the data runs of ${what} do not cover byte ${pos} of it`);
      }
      const take = Math.min(length - done, (run.vcn + run.length) * cs - pos, MAX_SINGLE_READ);
      if (run.lcn !== null) {
        const chunk = await this.readVolume(run.lcn * cs + (pos - run.vcn * cs), take, what);
        chunk.copy(out, done);
      }
      done += take;
      if (offset + done >= (run.vcn + run.length) * cs) index++;
    }
    return out;
  }

  private async readStream(stream: Stream, offset: number, length: number, what: string): Promise<Buffer> {
    if (stream.kind === 'resident') {
      if (offset + length > stream.value.length) unreadable(`read past the end of resident ${what}`);
      return Buffer.from(stream.value.subarray(offset, offset + length));
    }
    // Bytes past the initialized size were never written and read as zeros.
    const readable = Math.max(0, Math.min(length, stream.initializedSize - offset));
    if (readable === length) return this.readRuns(stream.runs, offset, length, what);
    const out = Buffer.alloc(length);
    if (readable > 0) (await this.readRuns(stream.runs, offset, readable, what)).copy(out);
    return out;
  }

  // --- directories ------------------------------------------------------------------------------

  private async openDirectoryIndex(record: MftRecord): Promise<DirectoryIndex | null> {
    const rootStream = await this.openStream(record, ATTR_INDEX_ROOT, I30);
    if (rootStream === null) return null;
    const what = `$INDEX_ROOT of MFT record ${record.recordNo}`;
    if (rootStream.kind !== 'resident' || rootStream.value.length < 0x20) unreadable(`${what} is malformed`, record.volumeOffset);
    const root = rootStream.value;
    if (root.readUInt32LE(0) !== ATTR_FILE_NAME) unreadable(`${what} does not index file names`, record.volumeOffset);
    const blockSize = root.readUInt32LE(8);
    if (!isPowerOfTwo(blockSize) || blockSize < 512 || blockSize > 65536) unreadable(`${what} gives an index block size of ${blockSize}`, record.volumeOffset);
    const cs = this.geometry.clusterSize;
    return {
      recordNo: record.recordNo,
      rootEntries: parseIndexEntries(root, 0x10, what, record.volumeOffset),
      blockSize,
      vcnSize: blockSize >= cs ? cs : 512,
      allocation: await this.openStream(record, ATTR_INDEX_ALLOCATION, I30),
    };
  }

  private async readIndexNode(index: DirectoryIndex, vcn: number): Promise<IndexEntry[]> {
    const what = `index block (INDX) at VCN ${vcn} of directory MFT record ${index.recordNo}`;
    const allocation = index.allocation;
    if (allocation === null) unreadable(`${what} is referenced but the directory has no $INDEX_ALLOCATION`);
    const offset = vcn * index.vcnSize;
    const volumeOffset = allocation.kind === 'runs' ? this.volumeOffsetOf(allocation.runs, offset) : -1;
    const key = `${index.recordNo}:${vcn}`;
    let block = this.indexBlockCache.get(key);
    if (block === undefined) {
      if (vcn < 0 || offset + index.blockSize > streamSize(allocation)) unreadable(`${what} lies outside the index allocation`);
      block = applyFixups(await this.readStream(allocation, offset, index.blockSize, what), 'INDX', what, volumeOffset);
      if (s64(block, 0x10) !== vcn) unreadable(`${what} says it is VCN ${s64(block, 0x10)}`, volumeOffset);
      if (this.indexBlockCache.size >= INDEX_BLOCK_CACHE_LIMIT) this.indexBlockCache.clear();
      this.indexBlockCache.set(key, block);
    }
    return parseIndexEntries(block, 0x18, what, volumeOffset);
  }

  /** Descends the B+tree: in each node, the first entry sorting after the name leads to the child holding it. */
  private async findEntry(index: DirectoryIndex, name: string): Promise<IndexEntry | null> {
    let entries = index.rootEntries;
    for (let depth = 0; depth <= MAX_TREE_DEPTH; depth++) {
      let next: number | null = null;
      for (const entry of entries) {
        const order = entry.isLast ? -1 : compareNamesIgnoringCase(name, entry.name);
        if (order === 0) return entry;
        if (order < 0) {
          next = entry.childVcn;
          break;
        }
      }
      if (next === null) return this.findEntryByScan(index, name);
      entries = await this.readIndexNode(index, next);
    }
    unreadable(`the index of directory MFT record ${index.recordNo} is deeper than ${MAX_TREE_DEPTH} levels`);
  }

  /** Only for non-ASCII names, where the volume's $UpCase order may differ from ours. */
  private async findEntryByScan(index: DirectoryIndex, name: string): Promise<IndexEntry | null> {
    if (/^[\x00-\x7f]*$/.test(name)) return null;
    const all = await this.allIndexEntries(index);
    return all.find((e) => compareNamesIgnoringCase(name, e.name) === 0) ?? null;
  }

  /** Every entry of one directory, visiting each node of its tree once. */
  private async allIndexEntries(index: DirectoryIndex): Promise<IndexEntry[]> {
    const found: IndexEntry[] = [];
    const visited = new Set<number>();
    const maxNodes = index.allocation === null ? 0 : Math.ceil(streamSize(index.allocation) / index.blockSize);
    const walk = async (entries: IndexEntry[], depth: number): Promise<void> => {
      for (const entry of entries) {
        if (entry.childVcn !== null) {
          if (depth >= MAX_TREE_DEPTH) unreadable(`the index of directory MFT record ${index.recordNo} is deeper than ${MAX_TREE_DEPTH} levels`);
          if (visited.has(entry.childVcn) || visited.size >= maxNodes) unreadable(`the index of directory MFT record ${index.recordNo} links a block twice`);
          visited.add(entry.childVcn);
          await walk(await this.readIndexNode(index, entry.childVcn), depth + 1);
        }
        if (!entry.isLast) found.push(entry);
      }
    };
    await walk(index.rootEntries, 0);
    return found;
  }

  /** Case-insensitive, '/'-separated; '/' is the root. Null when a component is missing or a non-directory is crossed. */
  private async resolvePath(path: string): Promise<MftRecord | null> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.length > MAX_PATH_COMPONENTS) return null;
    let record = await this.readRecord(RECORD_ROOT);
    for (const part of parts) {
      const index = await this.openDirectoryIndex(record);
      if (index === null) return null;
      const entry = await this.findEntry(index, part);
      if (entry === null) return null;
      record = await this.readRecord(entry.recordNo);
      if ((record.flags & RECORD_FLAG_IN_USE) === 0 || record.baseRecordNo !== record.recordNo || (entry.sequence !== 0 && entry.sequence !== record.sequence)) {
        unreadable(`the directory entry "${part}" points to MFT record ${entry.recordNo}, which is no longer that file (stale index)`, record.volumeOffset);
      }
    }
    return record;
  }
}

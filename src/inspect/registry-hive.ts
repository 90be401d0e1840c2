import { MamoriError } from '../core/mamori-error.js';

/**
 * A read-only reader of Windows registry hive files ("regf": SOFTWARE, SYSTEM, ...), enough
 * for the inspector to learn a Windows guest's version, computer name and installed drivers.
 *
 * Layout, in short: a 4096-byte base block, then hive bins ("hbin", multiples of 4096 bytes)
 * cut into cells. A cell starts with a signed 32-bit size (negative while allocated). Every
 * reference between records is the offset of a cell relative to the first hive bin. Keys are
 * "nk" records, their subkeys are found through lists ("lf", "lh", "li", or "ri", a list of
 * lists), their values through a value list of "vk" records, and data over 16344 bytes
 * through a "db" record listing segments.
 *
 * The file comes from a disk we do not trust, so every offset is bounds-checked, every count
 * is checked against the cell that holds it, recursion is limited, and any damage is a
 * MamoriError FILESYSTEM_UNREADABLE naming the structure and its offset.
 */

export type RegValue = {
  type: 'sz' | 'expand_sz' | 'multi_sz' | 'dword' | 'qword' | 'binary' | 'none' | 'other';
  data: string | string[] | number | bigint | Buffer;
};

const BASE_BLOCK_SIZE = 4096;
const CHECKSUMMED_BYTES = 508;
const HBIN_HEADER_SIZE = 32;
/** Marks an absent reference (no list, no class name, ...). */
const NO_CELL = 0xffffffff;

const NK_FIXED_SIZE = 76;
const VK_FIXED_SIZE = 20;
/** nk flag: the name is stored as Latin-1 bytes rather than UTF-16LE. */
const KEY_COMP_NAME = 0x0020;
/** vk flag: likewise for value names. */
const VALUE_COMP_NAME = 0x0001;
/** vk data size high bit: the data (at most 4 bytes) sits in the data offset field itself. */
const DATA_IS_INLINE = 0x80000000;
/** Values longer than this are stored as big data ("db") in hives of version 1.4 and later. */
const BIG_DATA_THRESHOLD = 16344;

/** An "ri" may only point at leaf lists; a little slack tolerates odd writers, not cycles. */
const MAX_LIST_DEPTH = 4;

const REG_NONE = 0;
const REG_SZ = 1;
const REG_EXPAND_SZ = 2;
const REG_BINARY = 3;
const REG_DWORD = 4;
const REG_DWORD_BIG_ENDIAN = 5;
const REG_MULTI_SZ = 7;
const REG_QWORD = 11;

/** A key node as far as lookups need it. */
type KeyNode = {
  offset: number;
  name: string;
  subkeyCount: number;
  subkeyListOffset: number;
  valueCount: number;
  valueListOffset: number;
};

/** A value record before its data is read. */
type ValueRecord = {
  offset: number;
  name: string;
  type: number;
  dataSize: number;
  dataOffset: number;
};

export class RegistryHive {
  private constructor(
    private readonly buf: Buffer,
    private readonly name: string,
    /** End of the hive bins: references past it are damage even if the buffer is longer. */
    private readonly dataEnd: number,
    private readonly rootOffset: number,
  ) {}

  /**
   * Checks the base block ('regf' signature, checksum of the first 508 bytes as XOR of u32s,
   * hbin start) and throws MamoriError('FILESYSTEM_UNREADABLE', ...) when it is not a hive or
   * is damaged.
   */
  static parse(buf: Buffer, name = 'registry hive'): RegistryHive {
    const fail = (what: string): never => {
      throw new MamoriError('FILESYSTEM_UNREADABLE', `${name}: ${what}`);
    };
    if (buf.length < BASE_BLOCK_SIZE + HBIN_HEADER_SIZE) fail(`${buf.length} bytes is too short for a registry hive`);
    if (buf.toString('latin1', 0, 4) !== 'regf') fail('no "regf" signature at offset 0: not a registry hive');
    const stored = buf.readUInt32LE(CHECKSUMMED_BYTES);
    if (!checksumMatches(baseBlockChecksum(buf), stored)) {
      fail(
        `base block checksum at offset 0x1fc is 0x${stored.toString(16)}, expected 0x${baseBlockChecksum(buf).toString(16)}`,
      );
    }
    const major = buf.readUInt32LE(20);
    if (major !== 1) fail(`unsupported format version ${major}.${buf.readUInt32LE(24)} at offset 0x14`);
    if (buf.toString('latin1', BASE_BLOCK_SIZE, BASE_BLOCK_SIZE + 4) !== 'hbin')
      fail('no "hbin" signature at offset 0x1000');

    const hiveBinsSize = buf.readUInt32LE(40);
    // A file copied out of NTFS may be longer than its bins (preallocation) or, when damaged,
    // shorter; references are checked against whichever ends first.
    const dataEnd = BASE_BLOCK_SIZE + Math.min(hiveBinsSize, buf.length - BASE_BLOCK_SIZE);
    const hive = new RegistryHive(buf, name, dataEnd, buf.readUInt32LE(36));
    hive.keyNode(hive.rootOffset, 'root key');
    return hive;
  }

  /** Subkey names of a key path ('' or '\\' is the root; case-insensitive lookup); null when the key does not exist. */
  subkeys(path: string): string[] | null {
    const key = this.findKey(path);
    if (key === null) return null;
    return this.subkeyOffsets(key).map((offset) => this.keyNode(offset, `subkey of "${key.name}"`).name);
  }

  /** A value of a key (case-insensitive value name; '' means the default value); null when the key or value is absent. */
  value(path: string, name: string): RegValue | null {
    const key = this.findKey(path);
    if (key === null) return null;
    const wanted = name.toUpperCase();
    for (const offset of this.valueOffsets(key)) {
      const record = this.valueRecord(offset);
      if (record.name.toUpperCase() === wanted) return decodeValue(record.type, this.valueData(record));
    }
    return null;
  }

  /** REG_SZ / REG_EXPAND_SZ as text; null when absent or of another type. */
  string(path: string, name: string): string | null {
    const v = this.value(path, name);
    return v !== null && (v.type === 'sz' || v.type === 'expand_sz') && typeof v.data === 'string' ? v.data : null;
  }

  /** REG_DWORD as a number; null when absent or of another type. */
  dword(path: string, name: string): number | null {
    const v = this.value(path, name);
    return v !== null && v.type === 'dword' && typeof v.data === 'number' ? v.data : null;
  }

  // --- key lookup -------------------------------------------------------------------------

  private findKey(path: string): KeyNode | null {
    let key = this.keyNode(this.rootOffset, 'root key');
    // A damaged hive can make a key its own descendant; walking such a path is damage, not a loop.
    const onPath = new Set<number>([key.offset]);
    for (const component of path.split('\\').filter((c) => c !== '')) {
      const child = this.childNamed(key, component);
      if (child === null) return null;
      if (onPath.has(child.offset)) this.damaged(`key "${child.name}" is its own ancestor`, child.offset);
      onPath.add(child.offset);
      key = child;
    }
    return key;
  }

  private childNamed(parent: KeyNode, name: string): KeyNode | null {
    const wanted = name.toUpperCase();
    for (const offset of this.subkeyOffsets(parent)) {
      const child = this.keyNode(offset, `subkey of "${parent.name}"`);
      if (child.name.toUpperCase() === wanted) return child;
    }
    return null;
  }

  /** Offsets of a key's (non-volatile) subkeys, in list order. Volatile keys never reach disk. */
  private subkeyOffsets(key: KeyNode): number[] {
    if (key.subkeyCount === 0 || key.subkeyListOffset === NO_CELL) return [];
    const found: number[] = [];
    this.collectSubkeyList(key, key.subkeyListOffset, 0, new Set<number>(), found);
    return found;
  }

  private collectSubkeyList(
    key: KeyNode,
    listOffset: number,
    depth: number,
    seenLists: Set<number>,
    found: number[],
  ): void {
    if (depth > MAX_LIST_DEPTH) this.damaged(`subkey lists of "${key.name}" nest too deep`, listOffset);
    if (seenLists.has(listOffset)) this.damaged(`subkey list of "${key.name}" refers to itself`, listOffset);
    seenLists.add(listOffset);
    const cell = this.cell(listOffset, 'subkey list');
    const signature = cell.toString('latin1', 0, 2);
    const count = cell.readUInt16LE(2);
    // lf/lh entries carry a name hint or hash after each offset; li/ri entries are bare offsets.
    const entrySize = signature === 'lf' || signature === 'lh' ? 8 : signature === 'li' || signature === 'ri' ? 4 : 0;
    if (entrySize === 0)
      this.damaged(`unknown subkey list type "${printable(signature)}" of "${key.name}"`, listOffset);
    if (4 + count * entrySize > cell.length)
      this.damaged(`subkey list of ${count} entries overruns its cell`, listOffset);
    for (let i = 0; i < count; i++) {
      const entry = cell.readUInt32LE(4 + i * entrySize);
      if (signature === 'ri') {
        this.collectSubkeyList(key, entry, depth + 1, seenLists, found);
      } else {
        // More entries than the key declares means the lists are damaged (or cross-linked).
        if (found.length >= key.subkeyCount)
          this.damaged(`"${key.name}" has more subkey list entries than its ${key.subkeyCount} subkeys`, listOffset);
        found.push(entry);
      }
    }
  }

  private keyNode(offset: number, what: string): KeyNode {
    const cell = this.cell(offset, what);
    if (cell.length < NK_FIXED_SIZE || cell.toString('latin1', 0, 2) !== 'nk')
      this.damaged(`${what} is not a key node`, offset);
    const flags = cell.readUInt16LE(2);
    const nameLength = cell.readUInt16LE(72);
    if (NK_FIXED_SIZE + nameLength > cell.length) this.damaged(`name of ${what} overruns its cell`, offset);
    const nameBytes = cell.subarray(NK_FIXED_SIZE, NK_FIXED_SIZE + nameLength);
    return {
      offset,
      name: decodeName(nameBytes, (flags & KEY_COMP_NAME) !== 0),
      subkeyCount: cell.readUInt32LE(20),
      subkeyListOffset: cell.readUInt32LE(28),
      valueCount: cell.readUInt32LE(36),
      valueListOffset: cell.readUInt32LE(40),
    };
  }

  // --- values ------------------------------------------------------------------------------

  private valueOffsets(key: KeyNode): number[] {
    if (key.valueCount === 0 || key.valueListOffset === NO_CELL) return [];
    const cell = this.cell(key.valueListOffset, `value list of "${key.name}"`);
    if (key.valueCount * 4 > cell.length)
      this.damaged(`value list of ${key.valueCount} entries of "${key.name}" overruns its cell`, key.valueListOffset);
    const offsets: number[] = [];
    for (let i = 0; i < key.valueCount; i++) offsets.push(cell.readUInt32LE(i * 4));
    return offsets;
  }

  private valueRecord(offset: number): ValueRecord {
    const cell = this.cell(offset, 'value');
    if (cell.length < VK_FIXED_SIZE || cell.toString('latin1', 0, 2) !== 'vk')
      this.damaged('value is not a "vk" record', offset);
    const nameLength = cell.readUInt16LE(2);
    if (VK_FIXED_SIZE + nameLength > cell.length) this.damaged('value name overruns its cell', offset);
    const flags = cell.readUInt16LE(16);
    return {
      offset,
      name: decodeName(cell.subarray(VK_FIXED_SIZE, VK_FIXED_SIZE + nameLength), (flags & VALUE_COMP_NAME) !== 0),
      dataSize: cell.readUInt32LE(4),
      dataOffset: cell.readUInt32LE(8),
      type: cell.readUInt32LE(12),
    };
  }

  /** The raw data bytes of a value, wherever they are stored. */
  private valueData(record: ValueRecord): Buffer {
    if ((record.dataSize & DATA_IS_INLINE) !== 0) {
      const length = record.dataSize & ~DATA_IS_INLINE;
      if (length > 4) this.damaged(`value "${record.name}" claims ${length} inline data bytes`, record.offset);
      // The data offset field (at +8 of the vk record, +4 for the cell size) holds the bytes.
      const at = BASE_BLOCK_SIZE + record.offset + 4 + 8;
      return Buffer.from(this.buf.subarray(at, at + length));
    }
    const length = record.dataSize;
    if (length === 0) return Buffer.alloc(0);
    const cell = this.cell(record.dataOffset, `data of value "${record.name}"`);
    // Big data only exists for long values, and only then can a "db" header not be the data itself.
    if (length > BIG_DATA_THRESHOLD && cell.length < length && cell.toString('latin1', 0, 2) === 'db') {
      return this.bigData(record, cell, length);
    }
    if (length > cell.length)
      this.damaged(
        `${length} bytes of value "${record.name}" overrun their ${cell.length}-byte cell`,
        record.dataOffset,
      );
    return Buffer.from(cell.subarray(0, length));
  }

  /** Reassembles data stored as a "db" record: a list of segment cells of up to 16344 bytes each. */
  private bigData(record: ValueRecord, db: Buffer, length: number): Buffer {
    if (db.length < 8) this.damaged(`big data record of value "${record.name}" is truncated`, record.dataOffset);
    const segmentCount = db.readUInt16LE(2);
    const listOffset = db.readUInt32LE(4);
    const list = this.cell(listOffset, `big data segment list of value "${record.name}"`);
    if (segmentCount * 4 > list.length)
      this.damaged(`big data segment list of ${segmentCount} entries overruns its cell`, listOffset);
    const parts: Buffer[] = [];
    let remaining = length;
    for (let i = 0; i < segmentCount && remaining > 0; i++) {
      const segmentOffset = list.readUInt32LE(i * 4);
      const segment = this.cell(segmentOffset, `big data segment ${i} of value "${record.name}"`);
      const take = Math.min(remaining, BIG_DATA_THRESHOLD, segment.length);
      parts.push(segment.subarray(0, take));
      remaining -= take;
    }
    if (remaining > 0)
      this.damaged(
        `big data segments of value "${record.name}" hold ${length - remaining} of ${length} bytes`,
        record.dataOffset,
      );
    return Buffer.concat(parts);
  }

  // --- cells -------------------------------------------------------------------------------

  /** The data of the allocated cell at `offset` (relative to the first hive bin), without its size field. */
  private cell(offset: number, what: string): Buffer {
    // Cells are aligned (8 bytes from Windows; 4 is all hivex demands) and none can start inside the first bin's header.
    if (offset === NO_CELL || offset % 4 !== 0 || offset < HBIN_HEADER_SIZE)
      this.damaged(`${what} has an invalid cell offset`, offset);
    const start = BASE_BLOCK_SIZE + offset;
    if (start + 4 > this.dataEnd) this.damaged(`${what} points outside the hive`, offset);
    const size = this.buf.readInt32LE(start);
    if (size >= 0) this.damaged(`${what} points at a free cell`, offset);
    const length = -size;
    if (length < 8 || start + length > this.dataEnd)
      this.damaged(`${what} has a cell of ${length} bytes that does not fit in the hive`, offset);
    return this.buf.subarray(start + 4, start + length);
  }

  private damaged(what: string, offset: number): never {
    throw new MamoriError('FILESYSTEM_UNREADABLE', `${this.name}: ${what} (cell offset 0x${offset.toString(16)})`, {
      details: { hive: this.name, offset },
    });
  }
}

/** XOR of the base block's first 127 little-endian u32s. */
function baseBlockChecksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i < CHECKSUMMED_BYTES; i += 4) sum ^= buf.readUInt32LE(i);
  return sum >>> 0;
}

/** Windows stores 0xfffffffe for a sum of 0xffffffff and 1 for 0; other writers (hivex) store the plain sum. */
function checksumMatches(computed: number, stored: number): boolean {
  if (computed === stored) return true;
  return (computed === 0xffffffff && stored === 0xfffffffe) || (computed === 0 && stored === 1);
}

function decodeName(bytes: Buffer, compressed: boolean): string {
  return compressed ? bytes.toString('latin1') : bytes.toString('utf16le', 0, bytes.length & ~1);
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/** UTF-16LE text; odd trailing bytes are dropped. */
function utf16(data: Buffer): string {
  return data.toString('utf16le', 0, data.length & ~1);
}

function decodeValue(type: number, data: Buffer): RegValue {
  switch (type) {
    case REG_SZ:
      return { type: 'sz', data: untilNul(utf16(data)) };
    case REG_EXPAND_SZ:
      return { type: 'expand_sz', data: untilNul(utf16(data)) };
    case REG_MULTI_SZ:
      return { type: 'multi_sz', data: multiString(utf16(data)) };
    case REG_DWORD:
      return data.length >= 4 ? { type: 'dword', data: data.readUInt32LE(0) } : { type: 'other', data };
    case REG_DWORD_BIG_ENDIAN:
      // Rare, but it is a DWORD; callers want the number, not the byte order.
      return data.length >= 4 ? { type: 'dword', data: data.readUInt32BE(0) } : { type: 'other', data };
    case REG_QWORD:
      return data.length >= 8 ? { type: 'qword', data: data.readBigUInt64LE(0) } : { type: 'other', data };
    case REG_BINARY:
      return { type: 'binary', data };
    case REG_NONE:
      return { type: 'none', data };
    default:
      return { type: 'other', data };
  }
}

function untilNul(s: string): string {
  const nul = s.indexOf('\0');
  return nul === -1 ? s : s.slice(0, nul);
}

/** The strings of a REG_MULTI_SZ: NUL-separated, the list ending at the first empty string. */
function multiString(s: string): string[] {
  const strings: string[] = [];
  for (const part of s.split('\0')) {
    if (part === '') break;
    strings.push(part);
  }
  return strings;
}

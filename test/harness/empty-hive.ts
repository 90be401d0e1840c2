/**
 * A minimal valid, empty Windows registry hive ("regf" file) for tests. Debian's hivex can
 * merge .reg files into an existing hive (hivexregedit --merge) but cannot create one, so the
 * tests start from this: a base block and one hive bin holding the root key, the security
 * cell every key refers to, and free space.
 */

const BASE_BLOCK_SIZE = 4096;
const HBIN_SIZE = 4096;
const HBIN_HEADER_SIZE = 32;
const NK_FIXED_SIZE = 76;
const SK_FIXED_SIZE = 20;
const NO_CELL = 0xffffffff;

/** KEY_HIVE_ENTRY (0x04) | KEY_NO_DELETE (0x08) | KEY_COMP_NAME (0x20): how Windows marks a hive root. */
const ROOT_KEY_FLAGS = 0x2c;

/** A fixed timestamp (2024-01-01T00:00:00Z as a FILETIME) keeps the fixture byte-for-byte reproducible. */
const FIXED_FILETIME = (BigInt(Date.UTC(2024, 0, 1)) + 11_644_473_600_000n) * 10_000n;

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}

/** A SID in its binary form: revision 1, the 48-bit authority, then the sub-authorities. */
function sid(authority: number, ...subAuthorities: number[]): Buffer {
  const b = Buffer.alloc(8 + 4 * subAuthorities.length);
  b.writeUInt8(1, 0);
  b.writeUInt8(subAuthorities.length, 1);
  b.writeUIntBE(authority, 2, 6);
  subAuthorities.forEach((s, i) => b.writeUInt32LE(s, 8 + 4 * i));
  return b;
}

/**
 * A self-relative security descriptor: owner Administrators, group SYSTEM, and a DACL with
 * one inheritable ACE granting Administrators KEY_ALL_ACCESS. hivex copies the parent's
 * security cell reference into every key it adds, so this has to be well formed.
 */
function securityDescriptor(): Buffer {
  const administrators = sid(5, 32, 544);
  const system = sid(5, 18);
  const ace = Buffer.alloc(8 + administrators.length);
  ace.writeUInt8(0, 0); // ACCESS_ALLOWED_ACE_TYPE
  ace.writeUInt8(0x02, 1); // CONTAINER_INHERIT_ACE
  ace.writeUInt16LE(ace.length, 2);
  ace.writeUInt32LE(0x000f003f, 4); // KEY_ALL_ACCESS
  administrators.copy(ace, 8);
  const aclHeader = Buffer.alloc(8);
  aclHeader.writeUInt8(2, 0); // ACL_REVISION
  aclHeader.writeUInt16LE(8 + ace.length, 2);
  aclHeader.writeUInt16LE(1, 4);
  const dacl = Buffer.concat([aclHeader, ace]);

  const header = Buffer.alloc(20);
  const daclOffset = header.length;
  const ownerOffset = daclOffset + dacl.length;
  const groupOffset = ownerOffset + administrators.length;
  header.writeUInt8(1, 0); // revision
  header.writeUInt16LE(0x8004, 2); // SE_SELF_RELATIVE | SE_DACL_PRESENT
  header.writeUInt32LE(ownerOffset, 4);
  header.writeUInt32LE(groupOffset, 8);
  header.writeUInt32LE(0, 12); // no SACL
  header.writeUInt32LE(daclOffset, 16);
  return Buffer.concat([header, dacl, administrators, system]);
}

/** The root key node record (without its cell size). */
function rootKeyNode(name: string, securityCellOffset: number): Buffer {
  const nameBytes = Buffer.from(name, 'latin1');
  const nk = Buffer.alloc(NK_FIXED_SIZE + nameBytes.length);
  nk.write('nk', 0, 'latin1');
  nk.writeUInt16LE(ROOT_KEY_FLAGS, 2);
  nk.writeBigUInt64LE(FIXED_FILETIME, 4);
  nk.writeUInt32LE(NO_CELL, 16); // parent: the root has none
  nk.writeUInt32LE(0, 20); // subkeys
  nk.writeUInt32LE(0, 24); // volatile subkeys
  nk.writeUInt32LE(NO_CELL, 28); // subkey list
  nk.writeUInt32LE(NO_CELL, 32); // volatile subkey list
  nk.writeUInt32LE(0, 36); // values
  nk.writeUInt32LE(NO_CELL, 40); // value list
  nk.writeUInt32LE(securityCellOffset, 44);
  nk.writeUInt32LE(NO_CELL, 48); // class name
  nk.writeUInt16LE(nameBytes.length, 72);
  nk.writeUInt16LE(0, 74); // class name length
  nameBytes.copy(nk, NK_FIXED_SIZE);
  return nk;
}

/** The security record (without its cell size); a single sk links to itself in both directions. */
function securityKey(ownOffset: number): Buffer {
  const sd = securityDescriptor();
  const sk = Buffer.alloc(SK_FIXED_SIZE + sd.length);
  sk.write('sk', 0, 'latin1');
  sk.writeUInt32LE(ownOffset, 4); // flink
  sk.writeUInt32LE(ownOffset, 8); // blink
  sk.writeUInt32LE(1, 12); // reference count: the root key
  sk.writeUInt32LE(sd.length, 16);
  sd.copy(sk, SK_FIXED_SIZE);
  return sk;
}

/** Writes an allocated cell (negative size) holding `record` at `offset` of `bin`; returns the next cell offset. */
function putAllocatedCell(bin: Buffer, offset: number, record: Buffer): number {
  const size = roundUp8(4 + record.length);
  bin.writeInt32LE(-size, offset);
  record.copy(bin, offset + 4);
  return offset + size;
}

function hiveBin(rootName: string): { bin: Buffer; rootOffset: number } {
  const bin = Buffer.alloc(HBIN_SIZE);
  bin.write('hbin', 0, 'latin1');
  bin.writeUInt32LE(0, 4); // offset of this bin from the first one
  bin.writeUInt32LE(HBIN_SIZE, 8);
  bin.writeBigUInt64LE(FIXED_FILETIME, 20);

  const rootOffset = HBIN_HEADER_SIZE;
  // The root's cell size is known before the sk offset is, since the name length fixes it.
  const skOffset = rootOffset + roundUp8(4 + NK_FIXED_SIZE + Buffer.byteLength(rootName, 'latin1'));
  putAllocatedCell(bin, rootOffset, rootKeyNode(rootName, skOffset));
  const freeOffset = putAllocatedCell(bin, skOffset, securityKey(skOffset));
  bin.writeInt32LE(HBIN_SIZE - freeOffset, freeOffset); // positive size: a free cell
  return { bin, rootOffset };
}

function baseBlock(rootOffset: number, hiveBinsSize: number, fileName: string): Buffer {
  const base = Buffer.alloc(BASE_BLOCK_SIZE);
  base.write('regf', 0, 'latin1');
  base.writeUInt32LE(1, 4); // primary sequence number
  base.writeUInt32LE(1, 8); // secondary sequence number: equal means the hive is clean
  base.writeBigUInt64LE(FIXED_FILETIME, 12);
  base.writeUInt32LE(1, 20); // major version
  base.writeUInt32LE(3, 24); // minor version
  base.writeUInt32LE(0, 28); // file type: primary file
  base.writeUInt32LE(1, 32); // file format: direct memory load
  base.writeUInt32LE(rootOffset, 36);
  base.writeUInt32LE(hiveBinsSize, 40);
  base.writeUInt32LE(1, 44); // clustering factor
  // 64 bytes of UTF-16LE: the tail of the hive's path, as Windows records it.
  base.write(fileName.slice(-31), 48, 64, 'utf16le');
  base.writeUInt32LE(regfChecksum(base), 508);
  return base;
}

/** XOR of the first 127 little-endian u32s of the base block. */
export function regfChecksum(base: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 508; i += 4) sum ^= base.readUInt32LE(i);
  return sum >>> 0;
}

/** An empty hive: a root key named `rootName` (ASCII), no subkeys and no values. */
export function emptyHive(rootName = 'ROOT'): Buffer {
  if (!/^[\x20-\x7e]{1,255}$/.test(rootName) || rootName.includes('\\')) {
    throw new RangeError(
      `root key name ${JSON.stringify(rootName)} must be 1-255 printable ASCII characters without a backslash`,
    );
  }
  const { bin, rootOffset } = hiveBin(rootName);
  return Buffer.concat([baseBlock(rootOffset, bin.length, `\\mamori\\${rootName}`), bin]);
}

// --- reshaping a hive written by hivex ---------------------------------------------------------
// hivex writes every subkey list as one "lh" and every value as one data cell, so the "ri"
// and "db" forms Windows uses for large keys and values are made here, by appending a hive
// bin with the new records and pointing the existing records at them. The old cells are left
// allocated but unreferenced, which readers (hivex included) tolerate.

const BIG_DATA_SEGMENT = 16344;

/** Offset (relative to the first hive bin) of every allocated cell, with its data. */
export function hiveCells(hive: Buffer): { offset: number; data: Buffer }[] {
  const end = BASE_BLOCK_SIZE + hive.readUInt32LE(40);
  const cells: { offset: number; data: Buffer }[] = [];
  for (let bin = BASE_BLOCK_SIZE; bin < end; bin += hive.readUInt32LE(bin + 8)) {
    const binEnd = bin + hive.readUInt32LE(bin + 8);
    for (let at = bin + HBIN_HEADER_SIZE; at < binEnd;) {
      const size = hive.readInt32LE(at);
      if (size < 0) cells.push({ offset: at - BASE_BLOCK_SIZE, data: hive.subarray(at + 4, at - size) });
      at += Math.abs(size);
    }
  }
  return cells;
}

/** The cell offset of the key node with this (ASCII) name; the first one if several match. */
export function keyCellOffset(hive: Buffer, name: string): number {
  const cell = hiveCells(hive).find(
    (c) =>
      c.data.toString('latin1', 0, 2) === 'nk' &&
      c.data.toString('latin1', NK_FIXED_SIZE, NK_FIXED_SIZE + c.data.readUInt16LE(72)) === name,
  );
  if (cell === undefined) throw new Error(`no key node named ${name}`);
  return cell.offset;
}

/** The cell offset of the value record with this (ASCII) name. */
export function valueCellOffset(hive: Buffer, name: string): number {
  const cell = hiveCells(hive).find(
    (c) =>
      c.data.toString('latin1', 0, 2) === 'vk' && c.data.toString('latin1', 20, 20 + c.data.readUInt16LE(2)) === name,
  );
  if (cell === undefined) throw new Error(`no value named ${name}`);
  return cell.offset;
}

/**
 * Appends one hive bin holding records of the given lengths; `fill` receives the cell offsets
 * they will have (so records can refer to each other) and returns the records.
 */
export function appendHiveBin(hive: Buffer, lengths: number[], fill: (offsets: number[]) => Buffer[]): Buffer {
  const binsSize = hive.readUInt32LE(40);
  const offsets: number[] = [];
  let used = HBIN_HEADER_SIZE;
  for (const length of lengths) {
    offsets.push(binsSize + used);
    used += roundUp8(4 + length);
  }
  const binSize = Math.ceil(used / HBIN_SIZE) * HBIN_SIZE;
  const bin = Buffer.alloc(binSize);
  bin.write('hbin', 0, 'latin1');
  bin.writeUInt32LE(binsSize, 4);
  bin.writeUInt32LE(binSize, 8);
  bin.writeBigUInt64LE(FIXED_FILETIME, 20);
  let at = HBIN_HEADER_SIZE;
  for (const record of fill(offsets)) at = putAllocatedCell(bin, at, record);
  if (at < binSize) bin.writeInt32LE(binSize - at, at);

  const base = Buffer.from(hive.subarray(0, BASE_BLOCK_SIZE));
  base.writeUInt32LE(binsSize + binSize, 40);
  base.writeUInt32LE(regfChecksum(base), 508);
  return Buffer.concat([base, hive.subarray(BASE_BLOCK_SIZE, BASE_BLOCK_SIZE + binsSize), bin]);
}

/** Rewrites the data of the value named `valueName` as big data: a "db" record, its segment list, and segments of 16344 bytes. */
export function moveValueToBigData(hive: Buffer, valueName: string): Buffer {
  const vk = BASE_BLOCK_SIZE + valueCellOffset(hive, valueName) + 4;
  const length = hive.readUInt32LE(vk + 4);
  const dataCell = BASE_BLOCK_SIZE + hive.readUInt32LE(vk + 8) + 4;
  const data = hive.subarray(dataCell, dataCell + length);
  const segments: Buffer[] = [];
  for (let i = 0; i < data.length; i += BIG_DATA_SEGMENT) segments.push(data.subarray(i, i + BIG_DATA_SEGMENT));

  const lengths = [8, 4 * segments.length, ...segments.map((s) => s.length)];
  let dbOffset = 0;
  const out = appendHiveBin(hive, lengths, ([dbCell, listOffset, ...segmentOffsets]) => {
    dbOffset = dbCell ?? 0;
    const db = Buffer.alloc(8);
    db.write('db', 0, 'latin1');
    db.writeUInt16LE(segments.length, 2);
    db.writeUInt32LE(listOffset ?? 0, 4);
    const list = Buffer.alloc(4 * segments.length);
    segmentOffsets.forEach((o, i) => list.writeUInt32LE(o, 4 * i));
    return [db, list, ...segments];
  });
  out.writeUInt32LE(dbOffset, vk + 8);
  return out;
}

/**
 * Replaces the single "lh" subkey list of the key named `keyName` by an "ri" index of two
 * leaf lists of type `leafType` ("li" keeps only the offsets, "lf"/"lh" an offset and a hint).
 */
export function splitSubkeyListIntoIndexRoot(
  hive: Buffer,
  keyName: string,
  leafType: 'lh' | 'lf' | 'li' = 'lh',
): Buffer {
  const nk = BASE_BLOCK_SIZE + keyCellOffset(hive, keyName) + 4;
  const list = BASE_BLOCK_SIZE + hive.readUInt32LE(nk + 28) + 4;
  if (hive.toString('latin1', list, list + 2) !== 'lh') throw new Error(`${keyName} has no "lh" subkey list`);
  const count = hive.readUInt16LE(list + 2);
  const entries = hive.subarray(list + 4, list + 4 + 8 * count);
  const entrySize = leafType === 'li' ? 4 : 8;
  const leaf = (first: number, end: number): Buffer => {
    const record = Buffer.alloc(4 + entrySize * (end - first));
    record.write(leafType, 0, 'latin1');
    record.writeUInt16LE(end - first, 2);
    // Hints and hashes are left as hivex wrote them (lh hashes); readers here do not use them.
    for (let i = first; i < end; i++) entries.copy(record, 4 + entrySize * (i - first), 8 * i, 8 * i + entrySize);
    return record;
  };
  const half = Math.floor(count / 2);
  const leaves = [leaf(0, half), leaf(half, count)];
  let riOffset = 0;
  const out = appendHiveBin(hive, [4 + 4 * leaves.length, ...leaves.map((l) => l.length)], ([ri, ...leafOffsets]) => {
    riOffset = ri ?? 0;
    const index = Buffer.alloc(4 + 4 * leafOffsets.length);
    index.write('ri', 0, 'latin1');
    index.writeUInt16LE(leafOffsets.length, 2);
    leafOffsets.forEach((o, i) => index.writeUInt32LE(o, 4 + 4 * i));
    return [index, ...leaves];
  });
  out.writeUInt32LE(riOffset, nk + 28);
  return out;
}

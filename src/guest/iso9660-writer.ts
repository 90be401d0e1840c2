import { MamoriError } from '../core/mamori-error.js';

/**
 * An in-process writer for the small ISO 9660 images cloud-init config drives are made of:
 * one root directory of files, readable three ways, as `genisoimage -J -R` makes them —
 * Rock Ridge names (Linux isofs by default), Joliet names (Windows, Linux with `norock`)
 * and plain 8.3 identifiers (anything else). Section numbers below are ECMA-119 (ISO 9660),
 * SUSP 1.12 (IEEE P1281), RRIP 1.09 (IEEE P1282, "RRIP_1991A") and Microsoft's Joliet spec.
 */

export interface IsoFile {
  name: string;
  data: Buffer | string;
}

export interface Iso9660Options {
  /** Recording date of the volume and every record; default now. A fixed date gives identical bytes. */
  date?: Date;
}

const SECTOR = 2048;
const MAX_IMAGE_BYTES = 16 * 1024 * 1024;
const MAX_NAME_CHARS = 64; // Joliet allows 64 UCS-2 characters in a file identifier
const VOLUME_ID = /^[A-Za-z0-9_]{1,32}$/;
const FILE_MODE = 0o100444; // S_IFREG, read-only for all
const DIR_MODE = 0o040555; // S_IFDIR, read and search for all

// Fixed layout: 16 sectors of system area (6.2.1), the descriptor set (6.7.1), then the
// four path tables (one sector each: a single-directory table is 10 bytes), then the rest.
const PVD_SECTOR = 16;
const JOLIET_SVD_SECTOR = 17;
const TERMINATOR_SECTOR = 18;
const PRIMARY_PATH_L = 19;
const PRIMARY_PATH_M = 20;
const JOLIET_PATH_L = 21;
const JOLIET_PATH_M = 22;
const FIRST_DIRECTORY_SECTOR = 23;
const ROOT_PATH_TABLE_BYTES = 10; // 9.4: 8 fixed bytes, 1-byte identifier, 1 pad byte

// RRIP 1.09 section 4.3 (ER): the extension's registered identifier and texts.
const RRIP_ID = 'RRIP_1991A';
const RRIP_DESCRIPTOR = 'THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS';
const RRIP_SOURCE =
  'PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.';

function invalid(message: string, details?: Record<string, unknown>): MamoriError {
  return new MamoriError('INVALID_INPUT', message, details === undefined ? {} : { details });
}

// Records and System Use entries are built as plain byte arrays: a few hundred tiny Buffers per
// image cost more than everything else put together.
type Bytes = number[];

/** 7.3.3: a 32-bit number recorded little-endian then big-endian. */
function both32(v: number): Bytes {
  const le = [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
  return [...le, ...le.slice().reverse()];
}

/** 7.2.3: a 16-bit number recorded little-endian then big-endian. */
function both16(v: number): Bytes {
  return [v & 0xff, v >>> 8, v >>> 8, v & 0xff];
}

function latin1(text: string): Bytes {
  const bytes: Bytes = [];
  for (let i = 0; i < text.length; i++) bytes.push(text.charCodeAt(i));
  return bytes;
}

/** 9.1.5: years since 1900, month, day, hour, minute, second, offset from GMT in 15-minute units (0: UTC). */
function shortDate(d: Date): Bytes {
  return [
    d.getUTCFullYear() - 1900,
    d.getUTCMonth() + 1,
    d.getUTCDate(),
    d.getUTCHours(),
    d.getUTCMinutes(),
    d.getUTCSeconds(),
    0,
  ];
}

/** 8.4.26.1: "YYYYMMDDHHMMSScc" digits then the GMT offset byte; all-zero digits mean "not specified". */
function longDate(d: Date | undefined): string {
  const p = (n: number, width: number): string => String(n).padStart(width, '0');
  const digits =
    d === undefined
      ? '0'.repeat(16)
      : p(d.getUTCFullYear(), 4) +
        p(d.getUTCMonth() + 1, 2) +
        p(d.getUTCDate(), 2) +
        p(d.getUTCHours(), 2) +
        p(d.getUTCMinutes(), 2) +
        p(d.getUTCSeconds(), 2) +
        p(Math.floor(d.getUTCMilliseconds() / 10), 2);
  return `${digits}\0`;
}

/** SUSP 4.1: a System Use Entry is a two-letter signature, its length, version 1, then its data. */
function suspEntry(signature: string, data: Bytes): Bytes {
  return [...latin1(signature), 4 + data.length, 1, ...data];
}

// SUSP 5.5 ER names the extension; Linux takes the volume as Rock Ridge (over Joliet) only when it finds one.
const ER_ENTRY = suspEntry('ER', [
  RRIP_ID.length,
  RRIP_DESCRIPTOR.length,
  RRIP_SOURCE.length,
  1,
  ...latin1(RRIP_ID + RRIP_DESCRIPTOR + RRIP_SOURCE),
]);

/** 9.1: one directory record. A pad byte follows an even-length identifier so the System Use area starts even. */
function directoryRecord(
  identifier: Bytes,
  extent: number,
  size: number,
  directory: boolean,
  date: Bytes,
  systemUse: Bytes = [],
): Bytes {
  const idPad = identifier.length % 2 === 0 ? [0] : [];
  // From byte 1: extended attribute length 0, extent (2-9), data length (10-17), date (18-24), flags (25;
  // bit 1 = directory), unit size and gap (26-27; not interleaved), volume sequence number (28-31), identifier.
  const body = [
    0,
    ...both32(extent),
    ...both32(size),
    ...date,
    directory ? 0x02 : 0x00,
    0,
    0,
    ...both16(1),
    identifier.length,
    ...identifier,
    ...idPad,
    ...systemUse,
  ];
  if (body.length % 2 === 0) body.push(0); // 9.1.1: the whole record's length, byte 0, is even
  const record = [body.length + 1, ...body];
  if (record.length > 255)
    throw invalid('a file name is too long to record with its Rock Ridge entries', {
      identifier: String.fromCharCode(...identifier),
    });
  return record;
}

/** Places records in a directory extent; 6.8.1.1: a record never crosses a sector boundary. */
function layOutDirectory(records: Bytes[]): { offsets: number[]; bytes: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const r of records) {
    if ((at % SECTOR) + r.length > SECTOR) at = Math.ceil(at / SECTOR) * SECTOR;
    offsets.push(at);
    at += r.length;
  }
  return { offsets, bytes: Math.ceil(at / SECTOR) * SECTOR };
}

/** An ISO 9660 level 1 identifier (8.3 d-characters, then ";1": 7.5, 10.1), unique among `taken`. */
function isoIdentifier(name: string, taken: Set<string>): { id: string; sortKey: string } {
  const dot = name.lastIndexOf('.');
  const dChars = (s: string): string => s.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
  const stem = dChars(dot < 0 ? name : name.slice(0, dot));
  const extension = dot < 0 ? '' : dChars(name.slice(dot + 1)).slice(0, 3);
  for (let n = 0; ; n++) {
    const counter = n === 0 ? '' : String(n);
    const name8 = stem.slice(0, 8 - counter.length) + counter;
    const id = `${name8}.${extension};1`;
    if (!taken.has(id)) {
      taken.add(id);
      // 9.3: records sort by name then extension, each padded with spaces (which sort before every d-character).
      return { id, sortKey: name8.padEnd(8, ' ') + extension.padEnd(3, ' ') };
    }
  }
}

/** A volume descriptor text field padded with spaces: bytes in the primary, UCS-2BE in Joliet's (an odd length ends in a zero byte). */
function writeText(image: Buffer, at: number, length: number, text: string, ucs2: boolean): void {
  if (!ucs2) {
    image.write(text.padEnd(length, ' '), at, length, 'latin1');
    return;
  }
  for (let i = 0; i + 1 < length; i += 2)
    image.writeUInt16BE(i / 2 < text.length ? text.charCodeAt(i / 2) : 0x20, at + i);
}

interface DescriptorFields {
  volumeId: string;
  totalSectors: number;
  pathTableL: number;
  pathTableM: number;
  rootRecord: Bytes;
  date: Date;
}

/** 8.4 (primary) and 8.5 with Joliet's additions (supplementary): both share this layout. */
function writeVolumeDescriptor(image: Buffer, sector: number, joliet: boolean, f: DescriptorFields): void {
  const at = sector * SECTOR;
  const put = (offset: number, bytes: Bytes): void => image.set(bytes, at + offset);
  put(0, [joliet ? 2 : 1, ...latin1('CD001'), 1]);
  writeText(image, at + 8, 32, 'LINUX', joliet); // system identifier, as genisoimage writes
  writeText(image, at + 40, 32, f.volumeId, joliet);
  put(80, both32(f.totalSectors));
  if (joliet) put(88, latin1('%/E')); // Joliet escape sequence: UCS-2 level 3
  put(120, both16(1)); // volume set size
  put(124, both16(1)); // volume sequence number
  put(128, both16(SECTOR)); // logical block size
  put(132, both32(ROOT_PATH_TABLE_BYTES));
  image.writeUInt32LE(f.pathTableL, at + 140); // type L path table (7.3.1); 144 is the optional one, unused
  image.writeUInt32BE(f.pathTableM, at + 148); // type M path table (7.3.2)
  put(156, f.rootRecord);
  for (const [offset, length] of [
    [190, 128],
    [318, 128],
    [446, 128],
    [702, 37],
    [739, 37],
    [776, 37],
  ] as const)
    writeText(image, at + offset, length, '', joliet);
  writeText(image, at + 574, 128, 'MAMORI', joliet); // application identifier
  image.write(longDate(f.date) + longDate(f.date) + longDate(undefined) + longDate(f.date), at + 813, 'latin1'); // creation, modification, expiration (none), effective
  image[at + 881] = 1; // file structure version
}

/** 9.4: the path table of a volume whose only directory is the root (its own parent, number 1). */
function writeRootPathTable(image: Buffer, sector: number, rootSector: number, bigEndian: boolean): void {
  const at = sector * SECTOR;
  image[at] = 1; // identifier length: the root's identifier is one 0x00 byte
  if (bigEndian) {
    image.writeUInt32BE(rootSector, at + 2);
    image.writeUInt16BE(1, at + 6);
  } else {
    image.writeUInt32LE(rootSector, at + 2);
    image.writeUInt16LE(1, at + 6);
  }
}

function validate(volumeId: string, files: IsoFile[], date: Date): void {
  if (!VOLUME_ID.test(volumeId))
    throw invalid(`the volume id must be 1 to 32 letters, digits or underscores, not ${JSON.stringify(volumeId)}`);
  if (Number.isNaN(date.getTime()) || date.getUTCFullYear() < 1900 || date.getUTCFullYear() > 2155)
    throw invalid('the recording date must be a valid date between 1900 and 2155');
  const seen = new Set<string>();
  for (const { name } of files) {
    // '/' and NUL cannot be in a file name; Joliet also forbids * : ; ? \ (';' would read as a version).
    if (name === '' || name === '.' || name === '..' || name.length > MAX_NAME_CHARS || /[/\\\0:;*?]/.test(name)) {
      throw invalid(
        `file name ${JSON.stringify(name)} must be 1 to ${MAX_NAME_CHARS} characters, not . or .., without / \\ : ; * ? or NUL`,
        { name },
      );
    }
    // Joliet readers (Windows; Linux without Rock Ridge) match names ignoring case, so those must differ in more than case.
    const key = name.toUpperCase();
    if (seen.has(key))
      throw invalid(`file ${JSON.stringify(name)} is listed twice (names are compared ignoring case)`, { name });
    seen.add(key);
  }
}

/** A complete ISO 9660 image: one root directory with these files, volume id `volumeId`. */
export function buildIso9660(volumeId: string, files: IsoFile[], opts: Iso9660Options = {}): Buffer {
  const date = opts.date ?? new Date();
  validate(volumeId, files, date);

  // Sorting by name first makes the 8.3 identifiers (and so the bytes) independent of input order.
  // The Joliet directory keeps this order: 9.3 sorts by identifier, and UCS-2 code units compare like JS strings.
  const taken = new Set<string>();
  const entries = [...files]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((f) => ({
      name: f.name,
      data: typeof f.data === 'string' ? Buffer.from(f.data, 'utf8') : f.data,
      iso: isoIdentifier(f.name, taken),
      extent: 0,
    }));
  const primaryOrder = [...entries].sort((a, b) => (a.iso.sortKey < b.iso.sortKey ? -1 : 1));

  const recorded = shortDate(date);
  // RRIP 1.09 4.1.1 PX: POSIX mode, links, uid, gid. 4.1.6 TF, flags 0x0E: modify, access and attribute-change times.
  const px = (mode: number, links: number): Bytes =>
    suspEntry('PX', [...both32(mode), ...both32(links), ...both32(0), ...both32(0)]);
  const tf = suspEntry('TF', [0x0e, ...recorded, ...recorded, ...recorded]);
  // "RR" (RRIP 1.09 only; 1.12 dropped it) lists the Rock Ridge fields present: bit 0 PX, bit 3 NM, bit 7 TF.
  // genisoimage writes it, and Linux trusts it: a record whose RR lacks the NM bit gets no Rock Ridge name.
  const rr = (flags: number): Bytes => suspEntry('RR', [flags]);

  // Built twice: first to size the directories (record lengths do not depend on extents), then for real.
  const build = (
    primaryRoot: number,
    primaryBytes: number,
    jolietRoot: number,
    jolietBytes: number,
    continuation: number,
  ) => {
    // SUSP 5.3: SP opens the root's "." record (check bytes BE EF, nothing skipped). ER is too long for a
    // record (255 bytes at most), so it goes in a continuation area that CE (SUSP 5.1) points to.
    const dotSystemUse = [
      ...suspEntry('SP', [0xbe, 0xef, 0]),
      ...rr(0x81),
      ...px(DIR_MODE, 2),
      ...tf,
      ...suspEntry('CE', [...both32(continuation), ...both32(0), ...both32(ER_ENTRY.length)]),
    ];
    const primary = [
      directoryRecord([0], primaryRoot, primaryBytes, true, recorded, dotSystemUse),
      directoryRecord([1], primaryRoot, primaryBytes, true, recorded, [...rr(0x81), ...px(DIR_MODE, 2), ...tf]),
      ...primaryOrder.map((e) => {
        const nm = suspEntry('NM', [0, ...Buffer.from(e.name, 'utf8')]); // RRIP 4.1.4: the real name, flags 0
        return directoryRecord(latin1(e.iso.id), e.extent, e.data.length, false, recorded, [
          ...rr(0x89),
          ...nm,
          ...px(FILE_MODE, 1),
          ...tf,
        ]);
      }),
    ];
    const joliet = [
      directoryRecord([0], jolietRoot, jolietBytes, true, recorded),
      directoryRecord([1], jolietRoot, jolietBytes, true, recorded),
      ...entries.map((e) =>
        directoryRecord([...Buffer.from(e.name, 'utf16le').swap16()], e.extent, e.data.length, false, recorded),
      ),
    ];
    // The descriptors' root records (8.4.18) are the "." records without System Use entries.
    return {
      primary,
      joliet,
      primaryRoot: directoryRecord([0], primaryRoot, primaryBytes, true, recorded),
      jolietRoot: joliet[0] ?? [],
    };
  };

  const sizing = build(0, 0, 0, 0, 0);
  const primaryBytes = layOutDirectory(sizing.primary).bytes;
  const jolietBytes = layOutDirectory(sizing.joliet).bytes;
  const primaryRoot = FIRST_DIRECTORY_SECTOR;
  const jolietRoot = primaryRoot + primaryBytes / SECTOR;
  const continuation = jolietRoot + jolietBytes / SECTOR;
  let next = continuation + 1;
  for (const e of entries) {
    // Each file starts on its own sector; an empty file gets extent 0 and length 0.
    e.extent = e.data.length === 0 ? 0 : next;
    next += Math.ceil(e.data.length / SECTOR);
  }
  // No padding after the last file: Linux (virtio disk and ATAPI CD-ROM), blkid and isoinfo read the image without it.
  const totalSectors = next;
  if (totalSectors * SECTOR > MAX_IMAGE_BYTES)
    throw invalid(`the image would be ${totalSectors * SECTOR} bytes; at most ${MAX_IMAGE_BYTES} fit`, {
      bytes: totalSectors * SECTOR,
    });

  const real = build(primaryRoot, primaryBytes, jolietRoot, jolietBytes, continuation);
  const image = Buffer.alloc(totalSectors * SECTOR); // the system area (6.2.1) stays zero
  const shared = { volumeId, totalSectors, date };
  writeVolumeDescriptor(image, PVD_SECTOR, false, {
    ...shared,
    pathTableL: PRIMARY_PATH_L,
    pathTableM: PRIMARY_PATH_M,
    rootRecord: real.primaryRoot,
  });
  writeVolumeDescriptor(image, JOLIET_SVD_SECTOR, true, {
    ...shared,
    pathTableL: JOLIET_PATH_L,
    pathTableM: JOLIET_PATH_M,
    rootRecord: real.jolietRoot,
  });
  image.set([0xff, ...latin1('CD001'), 1], TERMINATOR_SECTOR * SECTOR); // 8.3: type 255 ends the set
  writeRootPathTable(image, PRIMARY_PATH_L, primaryRoot, false);
  writeRootPathTable(image, PRIMARY_PATH_M, primaryRoot, true);
  writeRootPathTable(image, JOLIET_PATH_L, jolietRoot, false);
  writeRootPathTable(image, JOLIET_PATH_M, jolietRoot, true);
  for (const [records, base] of [
    [real.primary, primaryRoot],
    [real.joliet, jolietRoot],
  ] as const) {
    const { offsets } = layOutDirectory(records);
    records.forEach((r, i) => image.set(r, base * SECTOR + (offsets[i] ?? 0)));
  }
  image.set(ER_ENTRY, continuation * SECTOR);
  for (const e of entries) e.data.copy(image, e.extent * SECTOR);
  return image;
}

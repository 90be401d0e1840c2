/**
 * The 32-byte FAT directory entry format: 8.3 names in the OEM code page (with the Windows NT
 * lower-case flags), VFAT long names spread over the entries before their short entry, and the
 * volume-label entry. Pure parsing of bytes already read; the reader decides what to read.
 */

export const DIR_ENTRY_BYTES = 32;

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
export function decodeLabel(raw: Buffer): string {
  const copy = Buffer.from(raw);
  if (copy[0] === ENTRY_KANJI_E5) copy[0] = ENTRY_DELETED;
  const label = trimPadding(decodeOemBytes(copy));
  return label === 'NO NAME' ? '' : label;
}

// ---------------------------------------------------------------------------------------------
// Directory entries

/** One entry of a directory as stored, with both its long and its 8.3 name (lookups accept either). */
export interface StoredEntry {
  name: string;
  shortName: string;
  isDir: boolean;
  size: number;
  firstCluster: number;
}

export interface ParsedDirectory {
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

export function parseDirectory(bytes: Buffer, highClusterWord: boolean): ParsedDirectory {
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

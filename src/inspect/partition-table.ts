import { crc32 } from 'node:zlib';
import type { ByteReader } from './byte-reader.js';

/**
 * MBR (primary, extended and logical) and GPT partition tables, from the disk's first and
 * last sectors. GPT headers and entry arrays are checked against their CRC-32s; a damaged
 * primary is replaced by the backup at the end of the disk, and the report says so.
 */

export const SECTOR = 512;

export interface PartitionEntry {
  /** 1-based; MBR logical partitions are numbered from 5, as Linux does. */
  number: number;
  /** Bytes from the start of the disk. */
  start: number;
  size: number;
  /** A short human name ('EFI System', 'Linux filesystem', 'NTFS/exFAT', ...). */
  type: string;
  /** The type as the table stores it: a GUID (GPT) or '0x83' (MBR). */
  typeId: string;
  /** GPT partition name (UTF-16 in the entry). */
  name?: string;
  /** GPT unique partition GUID. */
  uuid?: string;
  /** MBR: primary, extended or logical; the active flag. */
  kind?: 'primary' | 'extended' | 'logical';
  bootable?: boolean;
}

export interface PartitionTable {
  type: 'gpt' | 'mbr' | 'none';
  /** GPT disk GUID, or the MBR disk signature as 0xXXXXXXXX. */
  diskId: string | null;
  partitions: PartitionEntry[];
  /** GPT only: which header and entry array the partitions come from. */
  gpt?: { header: 'primary' | 'backup'; primaryOk: boolean; backupOk: boolean };
  /** What a person should know: a damaged header, a partition past the end of the disk. */
  warnings: string[];
}

const GPT_TYPES: Record<string, string> = {
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI System',
  '21686148-6449-6e6f-744e-656564454649': 'BIOS boot',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'Linux root (x86-64)',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
  'e6d6d379-f507-44c2-a23c-238f2a3df928': 'Linux LVM',
  'a19d880f-05fc-4d3b-a006-743f0f84911e': 'Linux RAID',
  'ca7d7ccb-63ed-4c53-861c-1742536059cc': 'Linux LUKS',
  'bc13c2ff-59e6-4262-a352-b275fd6f7172': 'Linux extended boot',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
  'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'Microsoft reserved',
  'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery',
  '5808c8aa-7e8f-42e0-85d2-e1e90434cfb3': 'Windows LDM metadata',
  'af9b60a0-1431-4f62-bc68-3311714a69ad': 'Windows LDM data',
};

const MBR_TYPES: Record<number, string> = {
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'Extended',
  0x06: 'FAT16',
  0x07: 'NTFS/exFAT',
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x0f: 'W95 Extended (LBA)',
  0x11: 'Hidden FAT12',
  0x27: 'Windows recovery',
  0x42: 'Windows dynamic (LDM)',
  0x82: 'Linux swap',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xa5: 'FreeBSD',
  0xee: 'GPT protective',
  0xef: 'EFI System',
  0xfd: 'Linux RAID',
};
const EXTENDED = new Set([0x05, 0x0f, 0x85]);
/** At most this many logical partitions: a chain of EBRs that loops or runs on is damage. */
const MAX_LOGICAL = 128;

export const ESP_GUID = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
export const BIOS_BOOT_GUID = '21686148-6449-6e6f-744e-656564454649';
export const LDM_GUIDS = new Set(['5808c8aa-7e8f-42e0-85d2-e1e90434cfb3', 'af9b60a0-1431-4f62-bc68-3311714a69ad']);

/** A GUID as stored on disk (first three fields little-endian) in its text form. */
export function guidText(b: Buffer): string {
  const hex = (x: Buffer): string => x.toString('hex');
  const le = (x: Buffer): string => hex(Buffer.from(x).reverse());
  return `${le(b.subarray(0, 4))}-${le(b.subarray(4, 6))}-${le(b.subarray(6, 8))}-${hex(b.subarray(8, 10))}-${hex(b.subarray(10, 16))}`;
}

export async function readPartitionTable(disk: ByteReader): Promise<PartitionTable> {
  if (disk.size < 2 * SECTOR) return { type: 'none', diskId: null, partitions: [], warnings: [] };
  const mbr = await disk.read(0, SECTOR);
  const hasMbr = mbr.readUInt16LE(510) === 0xaa55;
  const entries = hasMbr ? mbrEntries(mbr) : [];
  // A protective MBR (one 0xEE entry), or a disk with a GPT and no MBR at all, is GPT.
  const gptHeader = await disk.read(SECTOR, SECTOR);
  const looksGpt = entries.some((e) => e.type === 0xee) || gptHeader.subarray(0, 8).toString('latin1') === 'EFI PART';
  if (looksGpt) {
    const gpt = await readGpt(disk);
    if (gpt) return gpt;
  }
  if (!hasMbr || entries.length === 0 || !plausibleMbr(entries, disk.size)) {
    // A filesystem written to the whole disk (or a partition image) carries 0x55AA too (FAT, NTFS).
    return { type: 'none', diskId: null, partitions: [], warnings: [] };
  }
  return readMbr(disk, mbr, entries);
}

interface MbrEntry {
  slot: number;
  status: number;
  type: number;
  lbaStart: number;
  sectors: number;
}

function mbrEntries(sector: Buffer): MbrEntry[] {
  const out: MbrEntry[] = [];
  for (let slot = 0; slot < 4; slot++) {
    const at = 446 + slot * 16;
    const type = sector[at + 4]!;
    const sectors = sector.readUInt32LE(at + 12);
    if (type === 0 || sectors === 0) continue;
    out.push({ slot, status: sector[at]!, type, lbaStart: sector.readUInt32LE(at + 8), sectors });
  }
  return out;
}

/** A volume boot sector also ends in 0x55AA; its "entries" are code and BPB bytes. */
function plausibleMbr(entries: MbrEntry[], diskSize: number): boolean {
  return entries.every(
    (e) => (e.status === 0 || e.status === 0x80) && e.lbaStart > 0 && e.lbaStart * SECTOR < diskSize,
  );
}

async function readMbr(disk: ByteReader, mbr: Buffer, entries: MbrEntry[]): Promise<PartitionTable> {
  const warnings: string[] = [];
  const partitions: PartitionEntry[] = [];
  const diskSectors = Math.floor(disk.size / SECTOR);
  for (const e of entries) {
    partitions.push({
      number: e.slot + 1,
      start: e.lbaStart * SECTOR,
      size: e.sectors * SECTOR,
      type: mbrTypeName(e.type),
      typeId: hexType(e.type),
      kind: EXTENDED.has(e.type) ? 'extended' : 'primary',
      bootable: e.status === 0x80,
    });
    if (e.lbaStart + e.sectors > diskSectors)
      warnings.push(
        `partition ${e.slot + 1} ends past the end of the disk (sector ${e.lbaStart + e.sectors} of ${diskSectors}): the image may be truncated`,
      );
  }
  const ext = entries.find((e) => EXTENDED.has(e.type));
  if (ext) partitions.push(...(await logicalPartitions(disk, ext, warnings)));
  return { type: 'mbr', diskId: `0x${mbr.readUInt32LE(440).toString(16).padStart(8, '0')}`, partitions, warnings };
}

/** The chain of extended boot records: each holds one logical partition and a link to the next. */
async function logicalPartitions(disk: ByteReader, ext: MbrEntry, warnings: string[]): Promise<PartitionEntry[]> {
  const out: PartitionEntry[] = [];
  const seen = new Set<number>();
  let ebrLba = ext.lbaStart;
  for (let n = 5; n < 5 + MAX_LOGICAL; n++) {
    if (seen.has(ebrLba) || (ebrLba + 1) * SECTOR > disk.size) {
      warnings.push(
        `the chain of logical partitions ${seen.has(ebrLba) ? 'loops' : 'points past the end of the disk'} at sector ${ebrLba}; logical partitions from ${n} on are not listed`,
      );
      return out;
    }
    seen.add(ebrLba);
    const ebr = await disk.read(ebrLba * SECTOR, SECTOR);
    if (ebr.readUInt16LE(510) !== 0xaa55) {
      warnings.push(
        `the extended boot record at sector ${ebrLba} has no 0x55AA signature; logical partitions from ${n} on are not listed`,
      );
      return out;
    }
    const [part, next] = [ebr.subarray(446, 462), ebr.subarray(462, 478)];
    if (part[4] !== 0 && part.readUInt32LE(12) > 0) {
      out.push({
        number: n,
        start: (ebrLba + part.readUInt32LE(8)) * SECTOR,
        size: part.readUInt32LE(12) * SECTOR,
        type: mbrTypeName(part[4]!),
        typeId: hexType(part[4]!),
        kind: 'logical',
        bootable: part[0] === 0x80,
      });
    }
    if (next[4] === 0 || next.readUInt32LE(12) === 0) return out;
    // The link is relative to the start of the extended partition, not to this EBR.
    ebrLba = ext.lbaStart + next.readUInt32LE(8);
  }
  warnings.push(`more than ${MAX_LOGICAL} logical partitions: the rest are not listed`);
  return out;
}

function mbrTypeName(t: number): string {
  return MBR_TYPES[t] ?? `unknown (${hexType(t)})`;
}

function hexType(t: number): string {
  return `0x${t.toString(16).padStart(2, '0')}`;
}

interface GptHeader {
  ok: boolean;
  why: string;
  entriesLba: number;
  count: number;
  entrySize: number;
  entriesCrc: number;
  diskGuid: string;
  firstUsable: number;
  lastUsable: number;
  alternateLba: number;
}

function parseGptHeader(b: Buffer, expectLba: number): GptHeader {
  const bad = (why: string): GptHeader => ({
    ok: false,
    why,
    entriesLba: 0,
    count: 0,
    entrySize: 0,
    entriesCrc: 0,
    diskGuid: '',
    firstUsable: 0,
    lastUsable: 0,
    alternateLba: 0,
  });
  if (b.subarray(0, 8).toString('latin1') !== 'EFI PART') return bad('no "EFI PART" signature');
  const size = b.readUInt32LE(12);
  if (size < 92 || size > SECTOR) return bad(`header size ${size} is out of range`);
  const copy = Buffer.from(b.subarray(0, size));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) >>> 0 !== b.readUInt32LE(16)) return bad('header CRC-32 mismatch');
  const myLba = Number(b.readBigUInt64LE(24));
  if (myLba !== expectLba) return bad(`header says it is at LBA ${myLba}, found at ${expectLba}`);
  const count = b.readUInt32LE(80);
  const entrySize = b.readUInt32LE(84);
  if (entrySize < 128 || entrySize % 8 !== 0 || count === 0 || count > 4096)
    return bad(`${count} entries of ${entrySize} bytes is not a sane entry array`);
  return {
    ok: true,
    why: '',
    entriesLba: Number(b.readBigUInt64LE(72)),
    count,
    entrySize,
    entriesCrc: b.readUInt32LE(88),
    diskGuid: guidText(b.subarray(56, 72)),
    firstUsable: Number(b.readBigUInt64LE(40)),
    lastUsable: Number(b.readBigUInt64LE(48)),
    alternateLba: Number(b.readBigUInt64LE(32)),
  };
}

async function gptEntries(disk: ByteReader, h: GptHeader): Promise<{ ok: boolean; raw: Buffer }> {
  const bytes = h.count * h.entrySize;
  if (h.entriesLba * SECTOR + bytes > disk.size) return { ok: false, raw: Buffer.alloc(0) };
  const raw = await disk.read(h.entriesLba * SECTOR, bytes);
  return { ok: crc32(raw) >>> 0 === h.entriesCrc, raw };
}

async function readGpt(disk: ByteReader): Promise<PartitionTable | null> {
  const lastLba = Math.floor(disk.size / SECTOR) - 1;
  const primary = parseGptHeader(await disk.read(SECTOR, SECTOR), 1);
  const primaryEntries = primary.ok ? await gptEntries(disk, primary) : null;
  const primaryOk = primary.ok && primaryEntries!.ok;
  // The backup sits at the disk's last LBA (where the primary says, if it is readable).
  const backupLba =
    primary.ok && primary.alternateLba > 1 && primary.alternateLba <= lastLba ? primary.alternateLba : lastLba;
  const backup = parseGptHeader(await disk.read(backupLba * SECTOR, SECTOR), backupLba);
  const backupEntries = backup.ok ? await gptEntries(disk, backup) : null;
  const backupOk = backup.ok && backupEntries!.ok;
  const warnings: string[] = [];
  let use: { h: GptHeader; raw: Buffer; which: 'primary' | 'backup' };
  if (primaryOk) {
    use = { h: primary, raw: primaryEntries!.raw, which: 'primary' };
    if (!backupOk)
      warnings.push(
        `the backup GPT header at LBA ${backupLba} is damaged (${backup.ok ? 'entry array CRC-32 mismatch' : backup.why}; a truncated image loses it); the primary was used`,
      );
  } else if (backupOk) {
    use = { h: backup, raw: backupEntries!.raw, which: 'backup' };
    warnings.push(
      `the primary GPT header is damaged (${primary.ok ? 'entry array CRC-32 mismatch' : primary.why}); the backup header at LBA ${backupLba} was used`,
    );
  } else {
    // A protective MBR with no readable GPT behind it: say so rather than guess.
    if (!primary.ok && primary.why === 'no "EFI PART" signature' && !backup.ok) return null;
    return {
      type: 'gpt',
      diskId: primary.ok ? primary.diskGuid : null,
      partitions: [],
      gpt: { header: 'primary', primaryOk: false, backupOk: false },
      warnings: [
        `both GPT headers are damaged (primary: ${primary.ok ? 'entry array CRC-32 mismatch' : primary.why}; backup: ${backup.ok ? 'entry array CRC-32 mismatch' : backup.why}); no partitions can be trusted`,
      ],
    };
  }
  const partitions: PartitionEntry[] = [];
  for (let i = 0; i < use.h.count; i++) {
    const e = use.raw.subarray(i * use.h.entrySize, (i + 1) * use.h.entrySize);
    const typeGuid = guidText(e.subarray(0, 16));
    if (typeGuid === '00000000-0000-0000-0000-000000000000') continue;
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    if (last < first) {
      warnings.push(`GPT entry ${i + 1} ends before it starts (LBA ${first}..${last}); skipped`);
      continue;
    }
    if (last > lastLba)
      warnings.push(
        `partition ${i + 1} ends past the end of the disk (LBA ${last} of ${lastLba}): the image may be truncated`,
      );
    partitions.push({
      number: i + 1,
      start: first * SECTOR,
      size: (last - first + 1) * SECTOR,
      type: GPT_TYPES[typeGuid] ?? `unknown (${typeGuid})`,
      typeId: typeGuid,
      name: utf16Name(e.subarray(56, 128)),
      uuid: guidText(e.subarray(16, 32)),
    });
  }
  return { type: 'gpt', diskId: use.h.diskGuid, partitions, gpt: { header: use.which, primaryOk, backupOk }, warnings };
}

function utf16Name(b: Buffer): string {
  const text = b.toString('utf16le');
  const end = text.indexOf('\u0000');
  return end >= 0 ? text.slice(0, end) : text;
}

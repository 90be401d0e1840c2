import { MamoriError } from '../core/mamori-error.js';
import type { ByteReader } from './byte-reader.js';
import { parseExt4Superblock } from './ext4-reader.js';
import { parseFatBootSector } from './fat-reader.js';

/**
 * What a partition holds, from its superblock alone (the first 68 KiB at most), as blkid
 * would say: ext2/3/4 (with feature flags), xfs, btrfs, NTFS, exFAT, FAT12/16/32, swap, an LVM
 * physical volume, or LUKS (reported as encrypted; nothing inside is read).
 */
export interface FilesystemProbe {
  type:
    | 'ext2'
    | 'ext3'
    | 'ext4'
    | 'xfs'
    | 'btrfs'
    | 'ntfs'
    | 'exfat'
    | 'fat12'
    | 'fat16'
    | 'fat32'
    | 'swap'
    | 'lvm2_member'
    | 'crypto_luks'
    | 'iso9660';
  label?: string;
  uuid?: string;
  /** ext: the feature flags; LUKS: the header version. */
  features?: string[];
  version?: string;
  encrypted?: boolean;
}

/** Enough to see every superblock probed here (btrfs's is at 64 KiB). */
const PROBE_BYTES = 68 * 1024;

export async function probeFilesystem(part: ByteReader): Promise<FilesystemProbe | null> {
  const head = await part.read(0, Math.min(PROBE_BYTES, part.size));
  const at = (offset: number, text: string): boolean =>
    head.length >= offset + text.length && head.subarray(offset, offset + text.length).toString('latin1') === text;
  // A signature in a partition cut shorter than the header it starts (a damaged table, a truncated image).
  const whole = (bytes: number, what: string): void => {
    if (head.length < bytes)
      throw new MamoriError(
        'FILESYSTEM_UNREADABLE',
        `the partition starts like ${what} but is only ${head.length} bytes, too short for its ${bytes}-byte header: the partition table or the image is damaged`,
      );
  };
  if (at(0, 'LUKS\xba\xbe')) {
    whole(8, 'LUKS');
    const version = head.readUInt16BE(6);
    return {
      type: 'crypto_luks',
      version: String(version),
      uuid: cString(head.subarray(168, 208)),
      encrypted: true,
      ...(version === 2 ? { label: cString(head.subarray(24, 72)) } : {}),
    };
  }
  // LVM2's label sits in one of the first four sectors.
  for (let s = 0; s < 4; s++) {
    if (at(s * 512, 'LABELONE') && at(s * 512 + 24, 'LVM2 001')) {
      const pvh = s * 512 + head.readUInt32LE(s * 512 + 20);
      return {
        type: 'lvm2_member',
        version: 'LVM2 001',
        uuid: lvmUuid(head.subarray(pvh, pvh + 32).toString('latin1')),
      };
    }
  }
  if (at(0, 'XFSB'))
    return { type: 'xfs', uuid: plainUuid(head.subarray(32, 48)), label: cString(head.subarray(108, 120)) };
  if (at(65536 + 64, '_BHRfS_M'))
    return {
      type: 'btrfs',
      uuid: plainUuid(head.subarray(65536 + 32, 65536 + 48)),
      label: cString(head.subarray(65536 + 0x12b, 65536 + 0x12b + 256)),
    };
  if (head.length >= 2048) {
    const ext = parseExt4Superblock(head.subarray(1024, 2048));
    if (ext)
      return { type: ext.type, uuid: ext.uuid, ...(ext.label ? { label: ext.label } : {}), features: ext.features };
  }
  if (at(3, 'NTFS    ')) whole(0x50, 'NTFS');
  if (at(3, 'NTFS    '))
    return { type: 'ntfs', uuid: head.readBigUInt64LE(0x48).toString(16).toUpperCase().padStart(16, '0') };
  if (at(3, 'EXFAT   ')) whole(104, 'exFAT');
  if (at(3, 'EXFAT   ')) return { type: 'exfat', uuid: exfatSerial(head.readUInt32LE(100)) };
  if (head.length >= 512) {
    const fat = parseFatBootSector(head.subarray(0, 512));
    if (fat) return { type: fat.type, uuid: fat.serial, ...(fat.label ? { label: fat.label } : {}) };
  }
  for (const page of [4096, 8192, 16384, 65536]) {
    if (at(page - 10, 'SWAPSPACE2') || at(page - 10, 'SWAP-SPACE')) {
      return {
        type: 'swap',
        version: at(page - 10, 'SWAPSPACE2') ? '1' : '0',
        ...(page === 4096 && at(page - 10, 'SWAPSPACE2')
          ? { uuid: plainUuid(head.subarray(1036, 1052)), label: cString(head.subarray(1052, 1068)) }
          : {}),
      };
    }
  }
  if (at(32769, 'CD001')) return { type: 'iso9660', label: head.subarray(32808, 32840).toString('latin1').trim() };
  return null;
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b
    .subarray(0, end >= 0 ? end : b.length)
    .toString('utf8')
    .trim();
}

/** UUIDs stored as 16 bytes in order (xfs, btrfs, swap). */
function plainUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** LVM writes its 32-character id in groups 6-4-4-4-4-4-6. */
function lvmUuid(s: string): string {
  const sizes = [6, 4, 4, 4, 4, 4, 6];
  const parts: string[] = [];
  let i = 0;
  for (const n of sizes) {
    parts.push(s.slice(i, i + n));
    i += n;
  }
  return parts.join('-');
}

function exfatSerial(n: number): string {
  const h = n.toString(16).toUpperCase().padStart(8, '0');
  return `${h.slice(0, 4)}-${h.slice(4)}`;
}

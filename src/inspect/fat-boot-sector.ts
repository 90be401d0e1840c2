import { DIR_ENTRY_BYTES, decodeLabel } from './fat-directory-entries.js';

/**
 * The FAT boot sector (BPB and extended boot record): whether a partition holds FAT at all, which
 * FAT type, and where the FAT, the fixed root directory and the data region lie. Kept apart from
 * the reader because the filesystem probe needs only this.
 */

export interface FatInfo {
  /** By cluster count (< 4085 FAT12, < 65525 FAT16, else FAT32), except that a FAT32-layout BPB is always FAT32. */
  type: 'fat12' | 'fat16' | 'fat32';
  /** Volume label, trimmed; '' when the volume has none ('NO NAME'). */
  label: string;
  /** Volume serial as blkid prints it, 'XXXX-XXXX'; '' when the boot sector carries none. */
  serial: string;
  clusterSize: number;
  totalBytes: number;
}

/** Where the structures of one volume are; every offset is in bytes from the partition start. */
export interface FatGeometry {
  info: FatInfo;
  clusterCount: number;
  /** The FAT copy this reader consults (FAT32 may mark one copy active). */
  fatOffset: number;
  fatBytes: number;
  /** FAT12/16 only: the fixed root directory region. */
  rootDirOffset: number;
  rootDirBytes: number;
  /** FAT32 only: first cluster of the root directory; 0 on FAT12/16. */
  rootCluster: number;
  dataOffset: number;
}

type BootSectorVerdict = { ok: true; geometry: FatGeometry } | { ok: false; problem: string };

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function formatSerial(id: number): string {
  const half = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
  return `${half(id >>> 16)}-${half(id & 0xffff)}`;
}

/**
 * Microsoft's rule: the cluster count alone decides the type. One exception: a BPB laid out for
 * FAT32 (no 16-bit FAT size, no fixed root directory) on a volume with fewer clusters than FAT32's
 * minimum. mkfs.fat makes these (with a warning) and Linux reads them as FAT32; the count rule
 * would call them FAT16 without a root directory, so they are read as the FAT32 they were made as.
 */
function fatTypeOf(clusterCount: number, fat32Layout: boolean): FatInfo['type'] {
  if (fat32Layout) return 'fat32';
  if (clusterCount < 4085) return 'fat12';
  if (clusterCount < 65525) return 'fat16';
  return 'fat32';
}

/** The boot sector's basic checks; a reason when it is not a FAT boot sector, else null. */
function bootSectorBasicProblem(bs: Buffer): string | null {
  if (bs.length < 512) return `is only ${bs.length} bytes long`;
  if (bs.readUInt16LE(510) !== 0xaa55) return 'has no 0x55AA signature at byte 510';
  const jumpsShort = bs[0] === 0xeb && bs[2] === 0x90;
  if (!jumpsShort && bs[0] !== 0xe9) return 'does not start with a jump instruction (0xEB ?? 0x90 or 0xE9)';
  const bytesPerSector = bs.readUInt16LE(11);
  if (!isPowerOfTwo(bytesPerSector) || bytesPerSector < 512 || bytesPerSector > 4096) {
    return `gives ${bytesPerSector} bytes per sector at byte 11 (FAT needs a power of two from 512 to 4096)`;
  }
  if (!isPowerOfTwo(bs.readUInt8(13)))
    return `gives ${bs.readUInt8(13)} sectors per cluster at byte 13 (not a power of two)`;
  if (bs.readUInt16LE(14) === 0) return 'gives 0 reserved sectors at byte 14';
  if (bs.readUInt8(16) === 0) return 'gives 0 FAT copies at byte 16';
  return null;
}

/** Label and serial from the extended boot record, whose place depends on the BPB layout. */
function bootSectorVolumeId(bs: Buffer, fat32Layout: boolean): { label: string; serial: string } {
  const base = fat32Layout ? 64 : 36;
  const signature = bs.readUInt8(base + 2);
  // 0x29 carries serial and label; the older 0x28 carries the serial only.
  const serial = signature === 0x29 || signature === 0x28 ? formatSerial(bs.readUInt32LE(base + 3)) : '';
  const label = signature === 0x29 ? decodeLabel(bs.subarray(base + 7, base + 18)) : '';
  return { label, serial };
}

export function decodeBootSector(bs: Buffer): BootSectorVerdict {
  const basicProblem = bootSectorBasicProblem(bs);
  if (basicProblem !== null) return { ok: false, problem: basicProblem };

  const bytesPerSector = bs.readUInt16LE(11);
  const sectorsPerCluster = bs.readUInt8(13);
  const reservedSectors = bs.readUInt16LE(14);
  const fatCount = bs.readUInt8(16);
  const rootEntryCount = bs.readUInt16LE(17);
  const fatSectors16 = bs.readUInt16LE(22);
  const fatSectors = fatSectors16 !== 0 ? fatSectors16 : bs.readUInt32LE(36);
  const totalSectors = bs.readUInt16LE(19) !== 0 ? bs.readUInt16LE(19) : bs.readUInt32LE(32);
  if (fatSectors === 0) return { ok: false, problem: 'gives a FAT size of 0 sectors (bytes 22 and 36)' };
  if (totalSectors === 0) return { ok: false, problem: 'gives a volume size of 0 sectors (bytes 19 and 32)' };

  const rootDirSectors = Math.ceil((rootEntryCount * DIR_ENTRY_BYTES) / bytesPerSector);
  const metadataSectors = reservedSectors + fatCount * fatSectors + rootDirSectors;
  if (totalSectors <= metadataSectors) {
    return {
      ok: false,
      problem: `gives ${totalSectors} sectors in all, no more than its ${metadataSectors} sectors of FATs and root directory`,
    };
  }
  const clusterCount = Math.floor((totalSectors - metadataSectors) / sectorsPerCluster);
  const fat32Layout = fatSectors16 === 0 && rootEntryCount === 0;
  const type = fatTypeOf(clusterCount, fat32Layout);

  let rootCluster = 0;
  let activeFat = 0;
  if (type === 'fat32') {
    if (!fat32Layout)
      return {
        ok: false,
        problem: `has ${clusterCount} clusters (FAT32) yet a FAT12/16 layout (16-bit FAT size ${fatSectors16} at byte 22, ${rootEntryCount} fixed root entries at byte 17)`,
      };
    rootCluster = bs.readUInt32LE(44);
    if (rootCluster < 2 || rootCluster > clusterCount + 1)
      return {
        ok: false,
        problem: `gives root directory cluster ${rootCluster} at byte 44, outside clusters 2..${clusterCount + 1}`,
      };
    const extFlags = bs.readUInt16LE(40);
    // Bit 7 means "mirroring off": only the FAT numbered in bits 0-3 is kept up to date.
    if ((extFlags & 0x80) !== 0) activeFat = extFlags & 0x0f;
    if (activeFat >= fatCount)
      return { ok: false, problem: `names FAT copy ${activeFat} as active at byte 40, but there are only ${fatCount}` };
  } else if (rootEntryCount === 0) {
    return {
      ok: false,
      problem: `has ${clusterCount} clusters (${type.toUpperCase()}) but no root directory entries at byte 17`,
    };
  }

  const { label, serial } = bootSectorVolumeId(bs, fatSectors16 === 0);
  const clusterSize = bytesPerSector * sectorsPerCluster;
  const fatBytes = fatSectors * bytesPerSector;
  const firstFatOffset = reservedSectors * bytesPerSector;
  const rootDirOffset = firstFatOffset + fatCount * fatBytes;
  return {
    ok: true,
    geometry: {
      info: { type, label, serial, clusterSize, totalBytes: totalSectors * bytesPerSector },
      clusterCount,
      fatOffset: firstFatOffset + activeFat * fatBytes,
      fatBytes,
      rootDirOffset,
      rootDirBytes: type === 'fat32' ? 0 : rootEntryCount * DIR_ENTRY_BYTES,
      rootCluster,
      dataOffset: rootDirOffset + rootDirSectors * bytesPerSector,
    },
  };
}

/** From the boot sector (first 512 bytes): null unless it is a FAT boot sector. */
export function parseFatBootSector(bs: Buffer): FatInfo | null {
  const verdict = decodeBootSector(bs);
  return verdict.ok ? verdict.geometry.info : null;
}

import { unreadable } from './ntfs-errors.js';
import { isPowerOfTwo, u64 } from './ntfs-integers.js';

// ---------------------------------------------------------------------------------------------
// Boot sector

export interface Geometry {
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

export function parseBootSector(boot: Buffer): Geometry {
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

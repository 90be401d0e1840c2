import { WRITE_LOG_MAGIC } from '../../src/cdp/write-log-format.js';

/** Builders of QEMU blklogwrites logs (dm-log-writes format) for tests of their readers. */
export const LOG_SECTOR = 512;

export function logSuperblock(entries: number, sectorSize = LOG_SECTOR): Buffer {
  const b = Buffer.alloc(LOG_SECTOR);
  b.writeBigUInt64LE(WRITE_LOG_MAGIC, 0);
  b.writeBigUInt64LE(1n, 8);
  b.writeBigUInt64LE(BigInt(entries), 16);
  b.writeUInt32LE(sectorSize, 24);
  return b;
}

/** One entry: flags 1 flush, 2 FUA, 4 discard; `data` follows the header sector. */
export function logEntry(sector: number, sectors: number, flags: number, data?: Buffer): Buffer {
  const h = Buffer.alloc(LOG_SECTOR);
  h.writeBigUInt64LE(BigInt(sector), 0);
  h.writeBigUInt64LE(BigInt(sectors), 8);
  h.writeBigUInt64LE(BigInt(flags), 16);
  return data ? Buffer.concat([h, data]) : h;
}

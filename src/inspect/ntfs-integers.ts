import { unreadable } from './ntfs-errors.js';

// ---------------------------------------------------------------------------------------------
// Little-endian integers wider than 32 bits: NTFS stores 64-bit fields everywhere, but every
// value that matters fits in a JS number on any real volume; larger ones mean damage.

export function readIntLE(buf: Buffer, pos: number, bytes: number, signed: boolean): number {
  let value = 0n;
  for (let i = bytes - 1; i >= 0; i--) value = (value << 8n) | BigInt(buf[pos + i] ?? 0);
  if (signed && bytes > 0 && (buf[pos + bytes - 1] ?? 0) & 0x80) value -= 1n << BigInt(bytes * 8);
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    unreadable(`a ${bytes}-byte field holds ${value}, too large to be real`);
  }
  return Number(value);
}

export const u64 = (buf: Buffer, pos: number): number => readIntLE(buf, pos, 8, false);
export const s64 = (buf: Buffer, pos: number): number => readIntLE(buf, pos, 8, true);
/** MFT references: 48-bit record number + 16-bit sequence number. */
export const refRecord = (buf: Buffer, pos: number): number => readIntLE(buf, pos, 6, false);
export const refSequence = (buf: Buffer, pos: number): number => buf.readUInt16LE(pos + 6);

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(n) && (n & (n - 1)) === 0;
}

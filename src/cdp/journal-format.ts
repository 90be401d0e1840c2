import { crc32 } from 'node:zlib';

/*
 * The on-disk format of a continuous-replication journal: segment files of records, each
 * record checksummed, header and payload apart, so a write cut short by a crash is found and
 * dropped instead of read back torn. Sequence numbers run on across segments without a gap:
 * a reader that finds one out of order stops there (the journal never replays a reordered write).
 *
 * Segment: a 32-byte header (magic, version, first sequence number, creation time), then records.
 * Record: a 48-byte header, then for a write its data.
 *   0 magic u32 'MJRC'  4 kind u16  6 flags u16  8 seq u64  16 time u64 (µs since the epoch)
 *  24 offset u64  32 length u32  36 payload crc32 u32  40 reserved u32  44 header crc32 u32
 * All integers big-endian.
 */

export const SEGMENT_MAGIC = Buffer.from('MAMORIJ1', 'ascii');
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 32;
export const RECORD_MAGIC = 0x4d4a5243; // 'MJRC'
export const RECORD_HEADER_BYTES = 48;

export const RECORD_KIND = {
  /** Guest data at offset, `length` bytes of payload. */
  write: 1,
  /** The range reads as zeros from here on (write zeroes, or a trim): no payload. */
  zero: 2,
  /** A consistent instant: every record before it is part of the point. */
  checkpoint: 3,
} as const;
export type RecordKind = keyof typeof RECORD_KIND;

/** Checkpoint flags. */
export const CHECKPOINT_FLAG = { applicationConsistent: 1 << 0 } as const;

export interface JournalRecordHeader {
  kind: RecordKind;
  flags: number;
  seq: number;
  timeUs: number;
  offset: number;
  length: number;
  payloadCrc: number;
}

const KIND_BY_CODE = new Map<number, RecordKind>(Object.entries(RECORD_KIND).map(([k, v]) => [v, k as RecordKind]));

export function encodeSegmentHeader(firstSeq: number, createdAtMs: number): Buffer {
  const b = Buffer.alloc(SEGMENT_HEADER_BYTES);
  SEGMENT_MAGIC.copy(b, 0);
  b.writeUInt32BE(SEGMENT_VERSION, 8);
  b.writeBigUInt64BE(BigInt(firstSeq), 16);
  b.writeBigUInt64BE(BigInt(createdAtMs), 24);
  return b;
}

/** The first sequence number of a segment, or null when the header is not one of ours. */
export function decodeSegmentHeader(b: Buffer): { firstSeq: number; createdAtMs: number } | null {
  if (b.length < SEGMENT_HEADER_BYTES || !b.subarray(0, 8).equals(SEGMENT_MAGIC)) return null;
  if (b.readUInt32BE(8) !== SEGMENT_VERSION) return null;
  return { firstSeq: Number(b.readBigUInt64BE(16)), createdAtMs: Number(b.readBigUInt64BE(24)) };
}

/** A record's header; for a write, `payload` is its data (its crc is computed here). */
export function encodeRecordHeader(r: Omit<JournalRecordHeader, 'payloadCrc'>, payload: Buffer | null): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_BYTES);
  b.writeUInt32BE(RECORD_MAGIC, 0);
  b.writeUInt16BE(RECORD_KIND[r.kind], 4);
  b.writeUInt16BE(r.flags, 6);
  b.writeBigUInt64BE(BigInt(r.seq), 8);
  b.writeBigUInt64BE(BigInt(Math.round(r.timeUs)), 16);
  b.writeBigUInt64BE(BigInt(r.offset), 24);
  b.writeUInt32BE(r.length, 32);
  b.writeUInt32BE(payload === null ? 0 : crc32(payload) >>> 0, 36);
  b.writeUInt32BE(crc32(b.subarray(0, 44)) >>> 0, 44);
  return b;
}

/** A record header, or why it is not one (a torn or foreign tail). */
export function decodeRecordHeader(b: Buffer): JournalRecordHeader | { invalid: string } {
  if (b.length < RECORD_HEADER_BYTES) return { invalid: 'short header' };
  if (b.readUInt32BE(0) !== RECORD_MAGIC) return { invalid: 'bad record magic' };
  if (b.readUInt32BE(44) !== crc32(b.subarray(0, 44)) >>> 0) return { invalid: 'header checksum mismatch' };
  const kind = KIND_BY_CODE.get(b.readUInt16BE(4));
  if (kind === undefined) return { invalid: `unknown record kind ${b.readUInt16BE(4)}` };
  return {
    kind,
    flags: b.readUInt16BE(6),
    seq: Number(b.readBigUInt64BE(8)),
    timeUs: Number(b.readBigUInt64BE(16)),
    offset: Number(b.readBigUInt64BE(24)),
    length: b.readUInt32BE(32),
    payloadCrc: b.readUInt32BE(36),
  };
}

/** Bytes of payload that follow a record's header (only a write carries its data). */
export function payloadBytes(h: Pick<JournalRecordHeader, 'kind' | 'length'>): number {
  return h.kind === 'write' ? h.length : 0;
}

/** A whole record's bytes in a segment: its header and its payload. */
export function recordBytes(h: Pick<JournalRecordHeader, 'kind' | 'length'>): number {
  return RECORD_HEADER_BYTES + payloadBytes(h);
}

export function payloadMatches(h: JournalRecordHeader, payload: Buffer): boolean {
  return crc32(payload) >>> 0 === h.payloadCrc;
}

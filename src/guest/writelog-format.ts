import { crc32 } from 'node:zlib';
import { writeLogTextPayload } from './writelog-text-payload.js';

/**
 * The write-log record, shared by the in-guest writer (writelog-writer.c) and
 * the offline verifier. Little-endian, one record per 4096-byte slot, record
 * seq N in slot N-1:
 *
 *   0  magic "MAMORIWL"      8  u32 version      12 u32 record size
 *   16 u64 seq               24 u64 wall time ns 32 16-byte boot id
 *   48 payload (505 u64, xorshift64 from seq * 0x9E3779B97F4A7C15)
 *      or, in text mode, 4040 bytes of text from the same generator (writelog-text-payload.ts)
 *   4088 u32 CRC-32 (zlib) of bytes 0..4087        4092 u32 zero
 */
export const WL_MAGIC = Buffer.from('MAMORIWL', 'ascii');
export const WL_VERSION = 1;
export const WL_RECORD_SIZE = 4096;
export const WL_PAYLOAD_OFFSET = 48;
export const WL_PAYLOAD_WORDS = 505;
export const WL_CRC_OFFSET = 4088;
export const WL_SEQ_MULTIPLIER = 0x9e3779b97f4a7c15n;

/**
 * What fills a record's payload: `random` (the default, incompressible) or `text` (compressible,
 * for measuring compression on the wire). Both derive from the seq alone and the headers are the
 * same, so a log verifies record by record whichever mode (or mix of modes) wrote it.
 */
export const WL_PAYLOAD_KINDS = ['random', 'text'] as const;
export type WriteLogPayloadKind = (typeof WL_PAYLOAD_KINDS)[number];

export interface WriteLogRecord {
  seq: number;
  /** CLOCK_REALTIME in nanoseconds when the guest built the record. */
  timeNs: bigint;
  /** Lower-case UUID text, as in /proc/sys/kernel/random/boot_id. */
  bootId: string;
}

export type TornReason =
  | 'bad-header' // magic present, version/size/trailer wrong
  | 'bad-crc' // magic present, checksum does not match: a torn or damaged write
  | 'wrong-seq' // intact record in the wrong slot
  | 'bad-payload' // intact checksum yet payload not derived from its seq
  | 'garbage'; // non-zero bytes without the magic

export type SlotState =
  | { kind: 'empty' }
  | { kind: 'valid'; record: WriteLogRecord }
  | { kind: 'torn'; seq: number | null; reason: TornReason };

const MASK64 = (1n << 64n) - 1n;

/**
 * The payload words for a seq. The xorshift runs on two 32-bit halves because
 * BigInt arithmetic made scanning a 64 MiB disk take seconds.
 */
export function writeLogPayload(seq: number): Buffer {
  const out = Buffer.allocUnsafe(WL_PAYLOAD_WORDS * 8);
  const start = (BigInt(seq) * WL_SEQ_MULTIPLIER) & MASK64;
  let hi = Number(start >> 32n) >>> 0;
  let lo = Number(start & 0xffffffffn) >>> 0;
  for (let i = 0; i < WL_PAYLOAD_WORDS; i++) {
    // state ^= state << 13
    let h = ((hi << 13) | (lo >>> 19)) >>> 0;
    let l = (lo << 13) >>> 0;
    hi = (hi ^ h) >>> 0;
    lo = (lo ^ l) >>> 0;
    // state ^= state >> 7
    l = ((lo >>> 7) | (hi << 25)) >>> 0;
    h = hi >>> 7;
    hi = (hi ^ h) >>> 0;
    lo = (lo ^ l) >>> 0;
    // state ^= state << 17
    h = ((hi << 17) | (lo >>> 15)) >>> 0;
    l = (lo << 17) >>> 0;
    hi = (hi ^ h) >>> 0;
    lo = (lo ^ l) >>> 0;
    out.writeUInt32LE(lo, i * 8);
    out.writeUInt32LE(hi, i * 8 + 4);
  }
  return out;
}

export function writeLogPayloadOf(kind: WriteLogPayloadKind, seq: number): Buffer {
  return kind === 'text' ? writeLogTextPayload(seq, WL_PAYLOAD_WORDS * 8, WL_SEQ_MULTIPLIER) : writeLogPayload(seq);
}

export function bootIdToBytes(bootId: string): Buffer {
  const hex = bootId.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new TypeError(`not a boot id: ${bootId}`);
  return Buffer.from(hex, 'hex');
}

export function bytesToBootId(bytes: Buffer): string {
  const h = bytes.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

export function encodeRecord(record: WriteLogRecord, payload: WriteLogPayloadKind = 'random'): Buffer {
  const buf = Buffer.alloc(WL_RECORD_SIZE);
  WL_MAGIC.copy(buf, 0);
  buf.writeUInt32LE(WL_VERSION, 8);
  buf.writeUInt32LE(WL_RECORD_SIZE, 12);
  buf.writeBigUInt64LE(BigInt(record.seq), 16);
  buf.writeBigUInt64LE(record.timeNs, 24);
  bootIdToBytes(record.bootId).copy(buf, 32);
  writeLogPayloadOf(payload, record.seq).copy(buf, WL_PAYLOAD_OFFSET);
  buf.writeUInt32LE(crc32(buf.subarray(0, WL_CRC_OFFSET)), WL_CRC_OFFSET);
  return buf;
}

function isAllZero(buf: Buffer): boolean {
  // Comparing 8 bytes at a time keeps whole-disk scans cheap.
  for (let i = 0; i + 8 <= buf.length; i += 8) if (buf.readBigUInt64LE(i) !== 0n) return false;
  for (let i = buf.length - (buf.length % 8); i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Classifies the 4096 bytes of slot `slot` (0-based; it should hold seq slot+1). */
export function decodeSlot(buf: Buffer, slot: number): SlotState {
  if (buf.length !== WL_RECORD_SIZE) throw new RangeError(`a slot is ${WL_RECORD_SIZE} bytes, got ${buf.length}`);
  if (!buf.subarray(0, WL_MAGIC.length).equals(WL_MAGIC)) {
    return isAllZero(buf) ? { kind: 'empty' } : { kind: 'torn', seq: null, reason: 'garbage' };
  }
  const seqBig = buf.readBigUInt64LE(16);
  const seq = seqBig <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seqBig) : null;
  if (buf.readUInt32LE(WL_CRC_OFFSET) !== crc32(buf.subarray(0, WL_CRC_OFFSET))) {
    return { kind: 'torn', seq, reason: 'bad-crc' };
  }
  if (buf.readUInt32LE(8) !== WL_VERSION || buf.readUInt32LE(12) !== WL_RECORD_SIZE || buf.readUInt32LE(4092) !== 0) {
    return { kind: 'torn', seq, reason: 'bad-header' };
  }
  if (seq !== slot + 1) return { kind: 'torn', seq, reason: 'wrong-seq' };
  const payload = buf.subarray(WL_PAYLOAD_OFFSET, WL_CRC_OFFSET);
  if (!payload.equals(writeLogPayload(seq)) && !payload.equals(writeLogPayloadOf('text', seq))) {
    return { kind: 'torn', seq, reason: 'bad-payload' };
  }
  return {
    kind: 'valid',
    record: { seq, timeNs: buf.readBigUInt64LE(24), bootId: bytesToBootId(buf.subarray(32, 48)) },
  };
}

import { compressSync, uncompressSync } from 'lz4-napi';
import { MamoriError } from '../core/mamori-error.js';

/**
 * One frame of a compressed stream between two sites (compressed-stream.ts):
 *
 *   0  'M' 'Z'   2  kind (0 raw, 1 lz4)   3  zero   4  u32 BE payload length   8  payload
 *
 * A raw payload is the bytes themselves. An lz4 payload is lz4-napi's block format: a u32 LE
 * of the decompressed size, then the lz4 block. The magic in every frame makes a peer that is
 * not framing (a version mismatch, a stream cut mid-frame and resumed) fail on its first
 * header instead of feeding garbage to NBD.
 *
 * Every length is checked against the limit before any allocation: lz4-napi's uncompressSync
 * trusts its size prefix (it allocates whatever 4 GiB the prefix says), so a hostile peer
 * must never reach it with a prefix we have not bounded.
 */
export const FRAME_HEADER_BYTES = 8;
export const FRAME_KIND = { raw: 0, lz4: 1 } as const;
export type FrameKind = (typeof FRAME_KIND)[keyof typeof FRAME_KIND];

const MAGIC_0 = 0x4d; // 'M'
const MAGIC_1 = 0x5a; // 'Z'
const LZ4_SIZE_PREFIX = 4;

/** The largest frame a sender builds and a receiver accepts (decompressed), by default. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

/** lz4's worst case for n input bytes (LZ4_compressBound), plus lz4-napi's size prefix. */
export function lz4PayloadBound(n: number): number {
  return n + Math.floor(n / 255) + 16 + LZ4_SIZE_PREFIX;
}

export function frameHeader(kind: FrameKind, payloadLength: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h[0] = MAGIC_0;
  h[1] = MAGIC_1;
  h[2] = kind;
  h[3] = 0;
  h.writeUInt32BE(payloadLength, 4);
  return h;
}

export interface ParsedHeader {
  kind: FrameKind;
  payloadLength: number;
}

function invalid(message: string, details: Record<string, unknown>): MamoriError {
  return new MamoriError(
    'WIRE_FRAME_INVALID',
    `${message}; the connection was dropped. If the peer runs another mamori version, upgrade both sites to the same one; otherwise the peer or the path between the sites is damaging data.`,
    { details },
  );
}

/** Validates a header; throws WIRE_FRAME_INVALID for anything a well-behaved peer never sends. */
export function parseFrameHeader(h: Buffer, maxFrameBytes: number): ParsedHeader {
  if (h[0] !== MAGIC_0 || h[1] !== MAGIC_1 || h[3] !== 0) {
    throw invalid('The peer sent a frame without the compressed-stream magic', { header: h.toString('hex') });
  }
  const kind = h[2];
  const payloadLength = h.readUInt32BE(4);
  if (kind === FRAME_KIND.raw) {
    if (payloadLength === 0 || payloadLength > maxFrameBytes) {
      throw invalid(`The peer sent a raw frame of ${payloadLength} bytes (allowed 1..${maxFrameBytes})`, {
        kind,
        payloadLength,
        maxFrameBytes,
      });
    }
    return { kind, payloadLength };
  }
  if (kind === FRAME_KIND.lz4) {
    if (payloadLength <= LZ4_SIZE_PREFIX || payloadLength > lz4PayloadBound(maxFrameBytes)) {
      throw invalid(
        `The peer sent an lz4 frame of ${payloadLength} bytes, more than any ${maxFrameBytes}-byte frame compresses to`,
        {
          kind,
          payloadLength,
          maxFrameBytes,
        },
      );
    }
    return { kind, payloadLength };
  }
  throw invalid(`The peer sent a frame of unknown kind ${kind}`, { kind });
}

/** Decodes a payload of a validated header; the result is never larger than maxFrameBytes. */
export function decodeFramePayload(kind: FrameKind, payload: Buffer, maxFrameBytes: number): Buffer {
  if (kind === FRAME_KIND.raw) return payload;
  const size = payload.readUInt32LE(0);
  if (size === 0 || size > maxFrameBytes) {
    throw invalid(`The peer sent an lz4 frame that claims ${size} decompressed bytes (allowed 1..${maxFrameBytes})`, {
      decompressedLength: size,
      maxFrameBytes,
    });
  }
  let out: Buffer;
  try {
    out = uncompressSync(payload);
  } catch (e) {
    throw invalid('The peer sent an lz4 frame that does not decompress', { cause: String(e) });
  }
  // lz4-napi accepts a block that decodes to fewer bytes than its prefix says; we do not.
  if (out.length !== size) {
    throw invalid(`The peer sent an lz4 frame of ${out.length} bytes that claims ${size}`, {
      decompressedLength: out.length,
      claimed: size,
    });
  }
  return out;
}

/** The lz4 payload for raw bytes (lz4-napi's block format with its size prefix). */
export function lz4Payload(raw: Buffer): Buffer {
  return compressSync(raw);
}

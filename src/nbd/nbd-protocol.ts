/**
 * The NBD wire protocol (NetworkBlockDevice/nbd, doc/proto.md): constants and pure
 * encode/decode functions. Everything is big-endian. Decoders take exactly the bytes of
 * one message part and throw NbdProtocolViolation on bytes the spec does not allow;
 * nothing here touches a socket.
 */
import { MamoriError } from '../core/mamori-error.js';

/** Magic numbers. The 64-bit ones are bigints. */
export const NBD_MAGIC = {
  /** 'NBDMAGIC', first 8 bytes from the server in every handshake. */
  INIT_PASSWD: 0x4e42444d41474943n,
  /** 'IHAVEOPT': newstyle greeting, and the prefix of every option the client sends. */
  IHAVEOPT: 0x49484156454f5054n,
  /** Oldstyle greeting (cliserv_magic); not supported by this client. */
  CLISERV: 0x00420281861253n,
  OPTION_REPLY: 0x3e889045565a9n,
  REQUEST: 0x25609513,
  SIMPLE_REPLY: 0x67446698,
  STRUCTURED_REPLY: 0x668e33ef,
  /** Experimental EXTENDED_HEADERS magics: reserved, never sent by this client. */
  EXTENDED_REQUEST: 0x21e41c71,
  EXTENDED_REPLY: 0x6e8a278c,
} as const;

/** Handshake flags (16 bits, server to client). */
export const NBD_HANDSHAKE_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

/** Client flags (32 bits, client to server). */
export const NBD_CLIENT_FLAG = { C_FIXED_NEWSTYLE: 1 << 0, C_NO_ZEROES: 1 << 1 } as const;

/** Transmission flags (16 bits, in NBD_INFO_EXPORT or the NBD_OPT_EXPORT_NAME reply). */
export const NBD_TRANSMISSION_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STATUS_PAYLOAD: 1 << 12,
} as const;

/** Option codes (handshake phase). */
export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 0x80000000;
/** Option reply types; errors have bit 31 set. */
export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
  ERR_EXT_HEADER_REQD: ERR + 10,
} as const;

/** Information types in NBD_REP_INFO replies (and requested by NBD_OPT_INFO / NBD_OPT_GO). */
export const NBD_INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Request (command) types. */
export const NBD_CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

/** Command flags (16 bits in every request). */
export const NBD_CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply chunk flags. */
export const NBD_REPLY_FLAG = { DONE: 1 << 0 } as const;

/** Structured reply chunk types; error chunks have bit 15 set. */
export const NBD_REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** Error values in simple replies and error chunks. */
export const NBD_ERRNO = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoName = keyof typeof NBD_ERRNO;

/** `base:allocation` status flags. */
export const NBD_STATE = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;

/** `qemu:dirty-bitmap:NAME` status flags (QEMU's docs/interop/nbd.txt). */
export const QEMU_DIRTY_STATE = { DIRTY: 1 << 0 } as const;

/** Sizes of fixed message parts, in bytes. */
export const NBD_SIZE = {
  GREETING: 18,
  OPTION_HEADER: 16,
  OPTION_REPLY_HEADER: 20,
  EXPORT_NAME_REPLY: 10,
  EXPORT_NAME_ZEROES: 124,
  REQUEST_HEADER: 28,
  SIMPLE_REPLY_HEADER: 16,
  STRUCTURED_REPLY_HEADER: 20,
} as const;

/** Defaults the spec gives when a server does not advertise size constraints. */
export const NBD_DEFAULT_BLOCK_SIZES = { min: 1, preferred: 4096, max: 32 * 1024 * 1024 } as const;

/** Thrown by decoders for bytes the spec does not allow; the caller drops the connection. */
export class NbdProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolViolation';
  }
}

function nameOf(table: Record<string, number>, prefix: string, value: number): string {
  for (const [k, v] of Object.entries(table)) if (v === value) return `${prefix}${k}`;
  return `${prefix}UNKNOWN(${value})`;
}
export const optionName = (v: number): string => nameOf(NBD_OPT, 'NBD_OPT_', v);
export const replyName = (v: number): string => nameOf(NBD_REP, 'NBD_REP_', v);
export const commandName = (v: number): string => nameOf(NBD_CMD, 'NBD_CMD_', v);
export const chunkTypeName = (v: number): string => nameOf(NBD_REPLY_TYPE, 'NBD_REPLY_TYPE_', v);

/** The errno name for a wire error value; unknown values count as EINVAL, as the spec asks. */
export function errnoName(value: number): NbdErrnoName {
  for (const [k, v] of Object.entries(NBD_ERRNO)) if (v === value) return k as NbdErrnoName;
  return 'EINVAL';
}

export const isErrorReply = (type: number): boolean => type >= ERR;
export const isErrorChunk = (type: number): boolean => (type & 0x8000) !== 0;

function need(buf: Buffer, length: number, what: string): void {
  if (buf.length !== length) throw new NbdProtocolViolation(`${what}: expected ${length} bytes, got ${buf.length}`);
}

/** Reads an unsigned 64-bit value as a number; offsets and sizes past 2^53 are refused. */
export function readU64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolViolation(`64-bit value ${v} is too large`);
  return Number(v);
}

// ---- handshake -----------------------------------------------------------------------

export interface NbdGreeting {
  style: 'newstyle' | 'oldstyle';
  handshakeFlags: number;
}

/** The server's first 18 bytes: NBDMAGIC, IHAVEOPT (or oldstyle's cliserv magic), 16-bit flags. */
export function decodeGreeting(buf: Buffer): NbdGreeting {
  need(buf, NBD_SIZE.GREETING, 'greeting');
  if (buf.readBigUInt64BE(0) !== NBD_MAGIC.INIT_PASSWD)
    throw new NbdProtocolViolation('not an NBD server (no NBDMAGIC)');
  const second = buf.readBigUInt64BE(8);
  if (second === NBD_MAGIC.CLISERV) return { style: 'oldstyle', handshakeFlags: 0 };
  if (second !== NBD_MAGIC.IHAVEOPT) throw new NbdProtocolViolation(`unknown handshake magic 0x${second.toString(16)}`);
  return { style: 'newstyle', handshakeFlags: buf.readUInt16BE(16) };
}

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

/** An option: IHAVEOPT, option code, data length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(NBD_SIZE.OPTION_HEADER + data.length);
  b.writeBigUInt64BE(NBD_MAGIC.IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

function nbdString(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > 4096 || b.includes(0)) {
    throw new MamoriError('INVALID_INPUT', `${what} must be at most 4096 bytes of UTF-8 without NUL characters`, {
      details: { [what]: s },
    });
  }
  return b;
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: name length, name, count of info requests, requests. */
export function encodeExportRequest(exportName: string, infoRequests: readonly number[]): Buffer {
  const name = nbdString(exportName, 'export name');
  const b = Buffer.alloc(4 + name.length + 2 + 2 * infoRequests.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(infoRequests.length, 4 + name.length);
  infoRequests.forEach((info, i) => b.writeUInt16BE(info, 6 + name.length + 2 * i));
  return b;
}

/** Data of NBD_OPT_SET_META_CONTEXT / NBD_OPT_LIST_META_CONTEXT. */
export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const parts = [nbdString(exportName, 'export name'), ...queries.map((q) => nbdString(q, 'meta context query'))];
  const b = Buffer.alloc(4 + parts[0]!.length + 4 + parts.slice(1).reduce((n, p) => n + 4 + p.length, 0));
  let at = b.writeUInt32BE(parts[0]!.length, 0);
  at += parts[0]!.copy(b, at);
  at = b.writeUInt32BE(queries.length, at);
  for (const q of parts.slice(1)) {
    at = b.writeUInt32BE(q.length, at);
    at += q.copy(b, at);
  }
  return b;
}

export interface NbdOptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

export function decodeOptionReplyHeader(buf: Buffer): NbdOptionReplyHeader {
  need(buf, NBD_SIZE.OPTION_REPLY_HEADER, 'option reply header');
  const magic = buf.readBigUInt64BE(0);
  if (magic !== NBD_MAGIC.OPTION_REPLY)
    throw new NbdProtocolViolation(`bad option reply magic 0x${magic.toString(16)}`);
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

export type NbdInfo =
  | { type: 'export'; size: number; transmissionFlags: number }
  | { type: 'name'; name: string }
  | { type: 'description'; description: string }
  | { type: 'block-size'; min: number; preferred: number; max: number }
  | { type: 'unknown'; infoType: number };

/** Payload of an NBD_REP_INFO reply; unknown information types are returned as 'unknown' (to be ignored). */
export function decodeInfo(payload: Buffer): NbdInfo {
  if (payload.length < 2) throw new NbdProtocolViolation('NBD_REP_INFO shorter than 2 bytes');
  const infoType = payload.readUInt16BE(0);
  switch (infoType) {
    case NBD_INFO.EXPORT:
      need(payload, 12, 'NBD_INFO_EXPORT');
      return { type: 'export', size: readU64(payload, 2), transmissionFlags: payload.readUInt16BE(10) };
    case NBD_INFO.NAME:
      return { type: 'name', name: payload.subarray(2).toString('utf8') };
    case NBD_INFO.DESCRIPTION:
      return { type: 'description', description: payload.subarray(2).toString('utf8') };
    case NBD_INFO.BLOCK_SIZE:
      need(payload, 14, 'NBD_INFO_BLOCK_SIZE');
      return {
        type: 'block-size',
        min: payload.readUInt32BE(2),
        preferred: payload.readUInt32BE(6),
        max: payload.readUInt32BE(10),
      };
    default:
      return { type: 'unknown', infoType };
  }
}

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** Checks advertised size constraints against the rules of "Size constraints"; returns a reason or null. */
export function blockSizeViolation(s: { min: number; preferred: number; max: number }): string | null {
  if (!isPowerOfTwo(s.min) || s.min > 65536) return `minimum block size ${s.min} is not a power of 2 up to 65536`;
  if (!isPowerOfTwo(s.preferred) || s.preferred < Math.max(s.min, 512))
    return `preferred block size ${s.preferred} is invalid`;
  if (s.max < s.preferred) return `maximum payload ${s.max} is below the preferred block size ${s.preferred}`;
  return null;
}

export function decodeMetaContext(payload: Buffer): { id: number; name: string } {
  if (payload.length < 5) throw new NbdProtocolViolation('NBD_REP_META_CONTEXT shorter than 5 bytes');
  return { id: payload.readUInt32BE(0), name: payload.subarray(4).toString('utf8') };
}

/** The reply to NBD_OPT_EXPORT_NAME (without the optional 124 zero bytes). */
export function decodeExportNameReply(buf: Buffer): { size: number; transmissionFlags: number } {
  need(buf, NBD_SIZE.EXPORT_NAME_REPLY, 'NBD_OPT_EXPORT_NAME reply');
  return { size: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}

// ---- transmission --------------------------------------------------------------------

export interface NbdRequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

export function encodeRequestHeader(r: NbdRequestHeader): Buffer {
  const b = Buffer.alloc(NBD_SIZE.REQUEST_HEADER);
  b.writeUInt32BE(NBD_MAGIC.REQUEST, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

export function decodeRequestHeader(buf: Buffer): NbdRequestHeader {
  need(buf, NBD_SIZE.REQUEST_HEADER, 'request header');
  if (buf.readUInt32BE(0) !== NBD_MAGIC.REQUEST) throw new NbdProtocolViolation('bad request magic');
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: readU64(buf, 16),
    length: buf.readUInt32BE(24),
  };
}

export function decodeSimpleReplyHeader(buf: Buffer): { error: number; cookie: bigint } {
  need(buf, NBD_SIZE.SIMPLE_REPLY_HEADER, 'simple reply header');
  if (buf.readUInt32BE(0) !== NBD_MAGIC.SIMPLE_REPLY) throw new NbdProtocolViolation('bad simple reply magic');
  return { error: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
}

export interface NbdChunkHeader {
  flags: number;
  type: number;
  cookie: bigint;
  length: number;
}

export function decodeChunkHeader(buf: Buffer): NbdChunkHeader {
  need(buf, NBD_SIZE.STRUCTURED_REPLY_HEADER, 'structured reply header');
  if (buf.readUInt32BE(0) !== NBD_MAGIC.STRUCTURED_REPLY) throw new NbdProtocolViolation('bad structured reply magic');
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    length: buf.readUInt32BE(16),
  };
}

export interface NbdErrorChunk {
  errno: number;
  message: string;
  /** Only in NBD_REPLY_TYPE_ERROR_OFFSET. */
  offset?: number;
}

/** Any error chunk: error, message length, message, then (ERROR_OFFSET) a 64-bit offset. */
export function decodeErrorChunk(type: number, payload: Buffer): NbdErrorChunk {
  const fixed = type === NBD_REPLY_TYPE.ERROR_OFFSET ? 14 : 6;
  if (payload.length < 6 || (type === NBD_REPLY_TYPE.ERROR_OFFSET && payload.length < 14)) {
    throw new NbdProtocolViolation(`${chunkTypeName(type)} payload of ${payload.length} bytes is too short`);
  }
  const errno = payload.readUInt32BE(0);
  const msgLen = payload.readUInt16BE(4);
  if (msgLen > payload.length - fixed)
    throw new NbdProtocolViolation(`error message length ${msgLen} overruns the chunk`);
  if (errno === 0) throw new NbdProtocolViolation('error chunk with error value 0');
  const message = payload.subarray(6, 6 + msgLen).toString('utf8');
  if (type === NBD_REPLY_TYPE.ERROR_OFFSET) {
    if (payload.length !== 14 + msgLen) throw new NbdProtocolViolation('NBD_REPLY_TYPE_ERROR_OFFSET has a bad length');
    return { errno, message, offset: readU64(payload, 6 + msgLen) };
  }
  return { errno, message };
}

export function decodeOffsetHole(payload: Buffer): { offset: number; length: number } {
  need(payload, 12, 'NBD_REPLY_TYPE_OFFSET_HOLE');
  const length = payload.readUInt32BE(8);
  if (length === 0) throw new NbdProtocolViolation('hole of size 0');
  return { offset: readU64(payload, 0), length };
}

export interface NbdStatusDescriptor {
  length: number;
  flags: number;
}

export function decodeBlockStatus(payload: Buffer): { contextId: number; descriptors: NbdStatusDescriptor[] } {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0) {
    throw new NbdProtocolViolation(`NBD_REPLY_TYPE_BLOCK_STATUS payload of ${payload.length} bytes is not 4 + 8n`);
  }
  const descriptors: NbdStatusDescriptor[] = [];
  for (let at = 4; at < payload.length; at += 8) {
    const length = payload.readUInt32BE(at);
    if (length === 0) throw new NbdProtocolViolation('block status descriptor of length 0');
    descriptors.push({ length, flags: payload.readUInt32BE(at + 4) });
  }
  return { contextId: payload.readUInt32BE(0), descriptors };
}

/** Transmission flags as named booleans (plus the raw bits). */
export interface NbdTransmissionFlags {
  raw: number;
  readOnly: boolean;
  canFlush: boolean;
  canFua: boolean;
  rotational: boolean;
  canTrim: boolean;
  canWriteZeroes: boolean;
  canDf: boolean;
  canMultiConn: boolean;
  canResize: boolean;
  canCache: boolean;
  canFastZero: boolean;
}

export function decodeTransmissionFlags(raw: number): NbdTransmissionFlags {
  const f = NBD_TRANSMISSION_FLAG;
  const has = (bit: number): boolean => (raw & bit) !== 0;
  return {
    raw,
    readOnly: has(f.READ_ONLY),
    canFlush: has(f.SEND_FLUSH),
    canFua: has(f.SEND_FUA),
    rotational: has(f.ROTATIONAL),
    canTrim: has(f.SEND_TRIM),
    canWriteZeroes: has(f.SEND_WRITE_ZEROES),
    canDf: has(f.SEND_DF),
    canMultiConn: has(f.CAN_MULTI_CONN),
    canResize: has(f.SEND_RESIZE),
    canCache: has(f.SEND_CACHE),
    canFastZero: has(f.SEND_FAST_ZERO),
  };
}

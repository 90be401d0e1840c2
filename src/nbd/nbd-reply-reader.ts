import {
  NBD_CMD,
  NBD_MAGIC,
  NBD_REPLY_TYPE,
  NBD_SIZE,
  NbdProtocolViolation,
  chunkTypeName,
  decodeChunkHeader,
  decodeSimpleReplyHeader,
  readU64,
  type NbdChunkHeader,
} from './nbd-protocol.js';

/** What the reader needs to know about the request a cookie belongs to. */
export interface ReplyDestination {
  command: number;
  offset: number;
  length: number;
  /** For NBD_CMD_READ: where the data for [offset, offset + length) goes. */
  buffer: Buffer | null;
}

export interface ReplyHandlers {
  /** The request in flight with this cookie, or undefined. */
  lookup(cookie: bigint): ReplyDestination | undefined;
  /** A simple reply; for a successful read its data is already in the destination buffer. */
  simple(cookie: bigint, error: number): void;
  /** An OFFSET_DATA chunk whose data has been copied into the destination buffer. */
  data(header: NbdChunkHeader, offset: number, length: number): void;
  /** Any other structured reply chunk, with its whole payload. */
  chunk(header: NbdChunkHeader, payload: Buffer): void;
}

/** Largest non-data chunk payload accepted (block status may be up to 4 + 8 * 2^20 bytes). */
const MAX_CHUNK_PAYLOAD = 16 * 1024 * 1024;

type State =
  | { kind: 'header' }
  | { kind: 'simple-data'; cookie: bigint; error: number; dest: ReplyDestination; at: number; remaining: number }
  | { kind: 'data-offset'; header: NbdChunkHeader; dest: ReplyDestination }
  | { kind: 'data'; header: NbdChunkHeader; dest: ReplyDestination; offset: number; at: number; remaining: number }
  | { kind: 'payload'; header: NbdChunkHeader };

/**
 * Splits the server's transmission-phase byte stream into simple replies and structured
 * reply chunks. Read data is copied straight into the destination buffer of its request
 * (one copy, however the bytes were segmented). Throws NbdProtocolViolation on anything
 * the spec does not allow; after that the stream is unusable and must be dropped.
 */
export class NbdReplyReader {
  readonly #structured: boolean;
  readonly #handlers: ReplyHandlers;
  #chunks: Buffer[] = [];
  #available = 0;
  #state: State = { kind: 'header' };

  constructor(structuredReplies: boolean, handlers: ReplyHandlers) {
    this.#structured = structuredReplies;
    this.#handlers = handlers;
  }

  /**
   * `transient`: the chunk is a view of a buffer the caller reuses once this returns
   * (ReusedReadBuffer). What of it is still unparsed then is copied; it is always the last of
   * the held chunks, as everything before it was copied at its own push or owned.
   */
  push(chunk: Buffer, transient = false): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#available += chunk.length;
    while (this.#step()) {
      /* keep parsing while progress is made */
    }
    const last = this.#chunks.length - 1;
    if (transient && last >= 0) this.#chunks[last] = Buffer.from(this.#chunks[last]!);
  }

  /** One parsing step; false when more bytes are needed. */
  #step(): boolean {
    const st = this.#state;
    switch (st.kind) {
      case 'header':
        return this.#header();
      case 'simple-data':
      case 'data': {
        if (this.#available === 0) return false;
        const n = this.#copyInto(st.dest.buffer!, st.at, st.remaining);
        st.at += n;
        st.remaining -= n;
        if (st.remaining > 0) return false;
        this.#state = { kind: 'header' };
        if (st.kind === 'simple-data') this.#handlers.simple(st.cookie, st.error);
        else this.#handlers.data(st.header, st.offset, st.header.length - 8);
        return true;
      }
      case 'data-offset': {
        if (this.#available < 8) return false;
        const offset = readU64(this.#take(8), 0);
        const length = st.header.length - 8;
        const { dest } = st;
        if (offset < dest.offset || offset + length > dest.offset + dest.length) {
          throw new NbdProtocolViolation(
            `data chunk ${offset}+${length} lies outside the read ${dest.offset}+${dest.length}`,
          );
        }
        this.#state = { kind: 'data', header: st.header, dest, offset, at: offset - dest.offset, remaining: length };
        return true;
      }
      case 'payload': {
        if (this.#available < st.header.length) return false;
        const payload = this.#take(st.header.length);
        this.#state = { kind: 'header' };
        this.#handlers.chunk(st.header, payload);
        return true;
      }
    }
  }

  #header(): boolean {
    if (this.#available < 4) return false;
    const magic = this.#peekU32();
    if (magic === NBD_MAGIC.SIMPLE_REPLY) {
      if (this.#available < NBD_SIZE.SIMPLE_REPLY_HEADER) return false;
      const { cookie, error } = decodeSimpleReplyHeader(this.#take(NBD_SIZE.SIMPLE_REPLY_HEADER));
      const dest = this.#destination(cookie);
      const isRead = dest.command === NBD_CMD.READ;
      if (isRead && this.#structured)
        throw new NbdProtocolViolation('simple reply to a read after structured replies were negotiated');
      if (isRead && error === 0 && dest.length > 0) {
        this.#state = { kind: 'simple-data', cookie, error, dest, at: 0, remaining: dest.length };
      } else {
        this.#handlers.simple(cookie, error);
      }
      return true;
    }
    if (magic === NBD_MAGIC.STRUCTURED_REPLY) {
      if (!this.#structured)
        throw new NbdProtocolViolation('structured reply chunk although structured replies were not negotiated');
      if (this.#available < NBD_SIZE.STRUCTURED_REPLY_HEADER) return false;
      const header = decodeChunkHeader(this.#take(NBD_SIZE.STRUCTURED_REPLY_HEADER));
      const dest = this.#destination(header.cookie);
      if (header.type === NBD_REPLY_TYPE.OFFSET_DATA) {
        if (dest.command !== NBD_CMD.READ)
          throw new NbdProtocolViolation('data chunk in reply to a request that is not a read');
        if (header.length < 9) throw new NbdProtocolViolation(`data chunk of length ${header.length}`);
        this.#state = { kind: 'data-offset', header, dest };
        return true;
      }
      if (header.length > MAX_CHUNK_PAYLOAD) {
        throw new NbdProtocolViolation(`${chunkTypeName(header.type)} chunk of ${header.length} bytes is too large`);
      }
      this.#state = { kind: 'payload', header };
      return true;
    }
    throw new NbdProtocolViolation(`unknown reply magic 0x${magic.toString(16)}`);
  }

  #destination(cookie: bigint): ReplyDestination {
    const dest = this.#handlers.lookup(cookie);
    if (dest === undefined) throw new NbdProtocolViolation(`reply for cookie ${cookie}, which is not in flight`);
    return dest;
  }

  #peekU32(): number {
    const first = this.#chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    return Buffer.concat(this.#chunks).readUInt32BE(0);
  }

  #take(length: number): Buffer {
    if (length === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (first.length >= length) {
      this.#advance(length);
      return first.subarray(0, length);
    }
    const out = Buffer.allocUnsafe(length);
    this.#copyInto(out, 0, length);
    return out;
  }

  /** Copies up to `length` buffered bytes into `target` at `at`; returns how many. */
  #copyInto(target: Buffer, at: number, length: number): number {
    let done = 0;
    while (done < length && this.#chunks.length > 0) {
      const first = this.#chunks[0]!;
      const n = Math.min(first.length, length - done);
      first.copy(target, at + done, 0, n);
      this.#advance(n);
      done += n;
    }
    return done;
  }

  #advance(n: number): void {
    const first = this.#chunks[0]!;
    if (n === first.length) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#available -= n;
  }
}

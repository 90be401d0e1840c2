import { Duplex } from 'node:stream';
import { MamoriError } from '../core/mamori-error.js';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  FRAME_KIND,
  decodeFramePayload,
  frameHeader,
  lz4Payload,
  parseFrameHeader,
  type ParsedHeader,
} from './wire-frame.js';

/**
 * Compression on the wire between two sites: wraps the byte stream of one connection (the TLS
 * socket of an upgraded site-API connection; both ends run mamori) into a Duplex that frames and
 * compresses what it writes and decodes what it reads. Frames are in wire-frame.ts.
 *
 * What gets compressed is the sender's own decision, frame by frame; the receiver decodes both
 * kinds, so the two ends need only agree that the stream is framed.
 *
 * - `none`: every frame raw.
 * - `lz4`: every frame tried.
 * - `auto` (default): compress while the link is slower than the compressor. lz4 pays exactly
 *   then: compressed, a byte costs the compressor's time instead of the link's, so payload
 *   throughput is min(compressor, link x ratio), more than the link alone whenever the compressor
 *   is faster than the link. Both speeds are measured on the stream itself:
 *   - the compressor's: input bytes per second of each lz4 call (a moving average);
 *   - the link's: when the wrapped stream holds more than its budget we wait for 'drain', and the
 *     bytes it held over the time it took to take them is the link's rate (the kernel's socket
 *     buffer is full by then, so this is the rate the bytes leave at, not a burst into memory).
 *   A frame is compressed when the last measured link rate is below the compressor's, or while
 *   either is still unknown. When AUTO_PROBE_FRAMES full frames' worth of bytes went out without the link
 *   pushing back, the link keeps up with whatever we send, and frames go raw until it pushes back
 *   again (then its rate is measured anew). A stream therefore starts compressing (a WAN link is
 *   slower than lz4; the first frames teach us the compressor's speed) and drops to raw on a link
 *   that drains faster than we can compress. Measured in bench/wire/compress.ts (bench/README.md):
 *   the simpler rule "compress whenever the socket buffer is not empty" sent the first ~13 MiB raw
 *   on a 100 Mbit/s link (the kernel's buffers took them without pushing back) and compressed on
 *   loopback where the compressor was the bottleneck.
 *   Known limit: a wait is charged to the link even when the receiver's lz4 decompression is what
 *   holds it up, so a receiver slower at decompressing than the link keeps auto compressing. lz4
 *   decompresses at GB/s on an idle core; only an oversubscribed host (this build machine) is
 *   that slow. Pass `none` for a link known to be faster than the CPU.
 *
 * Use: both ends wrap their socket (`new CompressedStream(tlsSocket, { mode })`) once they agree
 * the connection is framed (e.g. a header of the HTTP Upgrade), then use the wrapper as the
 * socket (NbdClient on one side, `wire.pipe(unixSocket).pipe(wire)` on the other). `counters`
 * gives bytesIn and wireBytesOut for wire bytes per changed byte.
 *
 * In both trying modes a frame is sent raw when lz4 did not save at least 1/16 of it, and after
 * such a miss the next tries are skipped for 1, 2, 4 ... 64 frames (reset by a hit), so a stream of
 * incompressible data (encrypted or already compressed disks) spends almost nothing on lz4.
 *
 * Buffering is bounded both ways: a write completes only once the wrapped stream's buffer is
 * under its budget, and reading pauses the wrapped stream while our readable side is full.
 */
export const WIRE_COMPRESSION_MODES = ['auto', 'lz4', 'none'] as const;
export type WireCompressionMode = (typeof WIRE_COMPRESSION_MODES)[number];

/**
 * The mode a site's replication streams send in: MAMORI_WIRE_COMPRESSION (auto, lz4 or none),
 * `auto` when unset. `none` for a link known to be faster than lz4 on this host; `lz4` to
 * compress whatever the link's speed. An unknown value is refused, not ignored.
 */
export function wireCompressionMode(env: NodeJS.ProcessEnv = process.env): WireCompressionMode {
  const v = env['MAMORI_WIRE_COMPRESSION'];
  if (v === undefined || v === '') return 'auto';
  if ((WIRE_COMPRESSION_MODES as readonly string[]).includes(v)) return v as WireCompressionMode;
  throw new MamoriError(
    'INVALID_INPUT',
    `MAMORI_WIRE_COMPRESSION=${JSON.stringify(v)} is not a mode: give ${WIRE_COMPRESSION_MODES.join(', ')}`,
  );
}

export interface CompressedStreamOptions {
  mode?: WireCompressionMode;
  /** Largest frame we send and accept, decompressed; both ends must use the same or a larger one. */
  maxFrameBytes?: number;
}

export interface WireCounters {
  /** Bytes written to this stream by its user. */
  bytesIn: number;
  /** Bytes this stream wrote to the wire (headers included). */
  wireBytesOut: number;
  framesCompressed: number;
  framesRaw: number;
  /** Frames lz4 was run on (compressed ones and the misses sent raw). */
  lz4Attempts: number;
  /** Bytes read from the wire (headers included), and bytes handed to the reader after decoding. */
  wireBytesIn: number;
  bytesOut: number;
}

/** Frames smaller than this go raw: headers and small NBD replies do not compress. */
const MIN_TRY_BYTES = 1024;
const MAX_SKIP_FRAMES = 64;
/** auto: full frames' worth of bytes the link takes without pushing back before we stop compressing. */
export const AUTO_PROBE_FRAMES = 32;

export class CompressedStream extends Duplex {
  readonly #inner: Duplex;
  readonly #mode: WireCompressionMode;
  readonly #maxFrame: number;
  readonly #counters: WireCounters = {
    bytesIn: 0,
    wireBytesOut: 0,
    framesCompressed: 0,
    framesRaw: 0,
    lz4Attempts: 0,
    wireBytesIn: 0,
    bytesOut: 0,
  };
  // write side: what the auto rule has measured (see the header comment)
  #bytesSinceWait = 0;
  #linkBytesPerS: number | null = null;
  #lz4BytesPerS: number | null = null;
  #misses = 0;
  #skip = 0;
  // read side
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #header: ParsedHeader | null = null;
  /** Bytes of the current raw frame already passed on. */
  #rawDone = 0;
  #innerEnded = false;
  #wantMore = true;
  #pausedInner = false;
  #ended = false;

  constructor(inner: Duplex, options: CompressedStreamOptions = {}) {
    const maxFrame = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isInteger(maxFrame) || maxFrame < MIN_TRY_BYTES || maxFrame > 64 * 1024 * 1024) {
      throw new MamoriError('INVALID_INPUT', `maxFrameBytes must be an integer from ${MIN_TRY_BYTES} to 64 MiB`, {
        details: { maxFrameBytes: maxFrame },
      });
    }
    super({ writableHighWaterMark: maxFrame, readableHighWaterMark: maxFrame, allowHalfOpen: true });
    this.#inner = inner;
    this.#mode = options.mode ?? 'auto';
    this.#maxFrame = maxFrame;
    inner.on('data', (chunk: Buffer) => this.#onData(chunk));
    inner.on('end', () => this.#onEnd());
    inner.on('error', (err: Error) => this.destroy(err));
    inner.on('close', () => {
      if (this.destroyed) return;
      // Closed under us: nothing more can be sent, so this stream closes too, once its reader
      // has what arrived before the end (a user waiting for 'close', as an NBD client's
      // disconnect does, would otherwise wait on a half-open stream until its own timeout: 2 s
      // of every cycle).
      if (!this.#innerEnded) this.destroy();
      else if (this.readableEnded) this.destroy();
      else this.once('end', () => this.destroy());
    });
  }

  get mode(): WireCompressionMode {
    return this.#mode;
  }

  /** A copy of the byte and frame counters (the replication cycle reports wire bytes per changed byte). */
  get counters(): WireCounters {
    return { ...this.#counters };
  }

  // ---- write side ----

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#sendFrames([chunk]).then(() => cb(), cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.#sendFrames(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }

  /**
   * Cuts the chunks into frames of at most maxFrame bytes (small chunks joined) and sends them in
   * order. A frame's parts are joined only when lz4 is tried on it: a raw frame goes out as its
   * header and the caller's own buffers. An NBD write arrives as a 28-byte header and its payload;
   * joining them copied about half of every payload into a new frame-sized buffer, and on the
   * source those allocations alone drove the heap's major collections (perf: more CPU in V8's
   * marking threads than in the main thread at 100 MiB/s).
   */
  async #sendFrames(chunks: Buffer[]): Promise<void> {
    let parts: Buffer[] = [];
    let partBytes = 0;
    for (const chunk of chunks) {
      this.#counters.bytesIn += chunk.length;
      let off = 0;
      while (off < chunk.length) {
        const take = Math.min(chunk.length - off, this.#maxFrame - partBytes);
        parts.push(off === 0 && take === chunk.length ? chunk : chunk.subarray(off, off + take));
        partBytes += take;
        off += take;
        if (partBytes === this.#maxFrame) {
          await this.#sendFrame(parts, partBytes);
          parts = [];
          partBytes = 0;
        }
      }
    }
    if (partBytes > 0) await this.#sendFrame(parts, partBytes);
  }

  async #sendFrame(parts: Buffer[], length: number): Promise<void> {
    const inner = this.#inner;
    if (inner.destroyed)
      throw new MamoriError('NBD_DISCONNECTED', 'The connection to the peer site closed while sending');
    let packed: Buffer | null = null;
    if (this.#shouldTry(length)) {
      const raw = parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
      parts = [raw];
      this.#counters.lz4Attempts++;
      const t0 = process.hrtime.bigint();
      const out = lz4Payload(raw);
      const speed = raw.length / (Math.max(1, Number(process.hrtime.bigint() - t0)) / 1e9);
      this.#lz4BytesPerS = this.#lz4BytesPerS === null ? speed : this.#lz4BytesPerS * 0.75 + speed * 0.25;
      if (out.length <= raw.length - (raw.length >>> 4)) {
        packed = out;
        this.#misses = 0;
      } else {
        // Back off exponentially: incompressible streams should cost (almost) no lz4 time.
        this.#misses++;
        this.#skip = Math.min(MAX_SKIP_FRAMES, 2 ** (this.#misses - 1));
      }
    }
    const payloadLength = packed === null ? length : packed.length;
    inner.cork();
    inner.write(frameHeader(packed === null ? FRAME_KIND.raw : FRAME_KIND.lz4, payloadLength));
    if (packed !== null) inner.write(packed);
    else for (const part of parts) inner.write(part);
    inner.uncork();
    this.#counters.wireBytesOut += FRAME_HEADER_BYTES + payloadLength;
    if (packed !== null) this.#counters.framesCompressed++;
    else this.#counters.framesRaw++;
    // Allow about one more frame in the wrapped stream than its own mark before we hold the writer.
    const held = inner.writableLength;
    if (held > inner.writableHighWaterMark + this.#maxFrame) {
      const t0 = process.hrtime.bigint();
      await this.#drained();
      const seconds = Math.max(1, Number(process.hrtime.bigint() - t0)) / 1e9;
      this.#linkBytesPerS = held / seconds;
      this.#bytesSinceWait = 0;
    } else {
      this.#bytesSinceWait += length;
    }
  }

  #shouldTry(length: number): boolean {
    if (this.#mode === 'none' || length < MIN_TRY_BYTES) return false;
    if (this.#skip > 0) {
      this.#skip--;
      return false;
    }
    if (this.#mode === 'lz4') return true;
    // auto (see the header comment)
    if (this.#bytesSinceWait >= AUTO_PROBE_FRAMES * this.#maxFrame) return false;
    if (this.#linkBytesPerS === null || this.#lz4BytesPerS === null) return true;
    return this.#linkBytesPerS < this.#lz4BytesPerS;
  }

  #drained(): Promise<void> {
    const inner = this.#inner;
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        inner.off('drain', onDrain);
        inner.off('close', onClose);
        inner.off('error', onError);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onError = (err: Error): void => done(err);
      const onClose = (): void =>
        done(new MamoriError('NBD_DISCONNECTED', 'The connection to the peer site closed while sending'));
      inner.on('drain', onDrain);
      inner.on('close', onClose);
      inner.on('error', onError);
    });
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#inner.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.#inner.destroyed) this.#inner.destroy(err ?? undefined);
    cb(err);
  }

  // ---- read side ----

  override _read(): void {
    this.#wantMore = true;
    this.#pump();
  }

  #onData(chunk: Buffer): void {
    if (this.destroyed) return;
    this.#counters.wireBytesIn += chunk.length;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    this.#pump();
  }

  /**
   * Decodes frames while the reader wants them. When it is full, the rest stays compressed in
   * #pending (at most what the wrapped stream delivered before it paused) and the wrapped stream
   * is paused: a small chunk of lz4 frames can hold many MiB of zeros, so we never inflate ahead.
   */
  #pump(): void {
    try {
      while (this.#wantMore && !this.destroyed && this.#decodeOne()) {
        /* decodeOne pushed one frame */
      }
    } catch (e) {
      this.destroy(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    if (this.destroyed) return;
    if (this.#wantMore) {
      if (this.#innerEnded) this.#finishRead();
      else if (this.#pausedInner) {
        // Only a pause of ours is lifted: whoever else paused the wrapped stream keeps it paused.
        this.#pausedInner = false;
        this.#inner.resume();
      }
    } else if (!this.#pausedInner && !this.#inner.isPaused()) {
      this.#pausedInner = true;
      this.#inner.pause();
    }
  }

  /** Decodes at most one frame from what is pending; false when more bytes are needed. */
  #decodeOne(): boolean {
    if (this.#header === null) {
      if (this.#pendingBytes < FRAME_HEADER_BYTES) return false;
      this.#header = parseFrameHeader(this.#take(FRAME_HEADER_BYTES), this.#maxFrame);
    }
    const { kind, payloadLength } = this.#header;
    if (kind === FRAME_KIND.raw) {
      // Raw bytes are passed on as they arrive, chunk by chunk: no copy into a whole frame, and
      // the reader sees them a frame's transfer time sooner.
      if (this.#pending.length === 0) return false;
      const first = this.#pending[0]!;
      const data = this.#take(Math.min(first.length, payloadLength - this.#rawDone));
      this.#rawDone += data.length;
      if (this.#rawDone === payloadLength) {
        this.#header = null;
        this.#rawDone = 0;
      }
      this.#counters.bytesOut += data.length;
      this.#wantMore = this.push(data);
      return true;
    }
    if (this.#pendingBytes < payloadLength) return false;
    const data = decodeFramePayload(kind, this.#take(payloadLength), this.#maxFrame);
    this.#header = null;
    this.#counters.bytesOut += data.length;
    this.#wantMore = this.push(data);
    return true;
  }

  /** Removes n bytes from the front of the pending chunks (copies only across chunk edges). */
  #take(n: number): Buffer {
    const first = this.#pending[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#pending.shift();
      else this.#pending[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.#pending[0]!;
        const k = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, k);
        filled += k;
        if (k === c.length) this.#pending.shift();
        else this.#pending[0] = c.subarray(k);
      }
    }
    this.#pendingBytes -= n;
    return out;
  }

  #onEnd(): void {
    this.#innerEnded = true;
    this.#pump();
  }

  #finishRead(): void {
    if (this.#ended) return;
    if (this.#header !== null || this.#pendingBytes > 0) {
      this.destroy(
        new MamoriError(
          'NBD_DISCONNECTED',
          'The peer site closed the connection in the middle of a frame (link cut or peer stopped); what was in flight is lost and the next cycle sends it again.',
          { details: { pendingBytes: this.#pendingBytes, headerRead: this.#header !== null } },
        ),
      );
      return;
    }
    this.#ended = true;
    this.push(null);
  }
}

import type { Duplex } from 'node:stream';
import { ByteQueue } from './byte-queue.js';
import {
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_DEFAULT_BLOCK_SIZES,
  NBD_ERRNO,
  NBD_MAGIC,
  NBD_SIZE,
  NBD_TRANSMISSION_FLAG,
  NbdProtocolViolation,
  type NbdErrnoName,
} from './nbd-protocol.js';
import { NbdServerOptions, serverGreeting, type NbdExportInfo } from './nbd-server-options.js';

/*
 * An NBD server of mamori's own, on a connection it is handed (a unix socket of this host):
 * fixed newstyle handshake, simple replies, READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, DISC.
 * What it serves is a backend: the journal receiver of continuous replication takes the
 * writes QEMU's write-blocking mirror forwards; later, instant recovery presents a base plus a
 * journal to a VM. (QEMU's own servers serve images; this one serves what is not an image.)
 *
 * Requests reach the backend in the order they arrived, each call made before the next
 * request is parsed: a backend that journals writes sees them in the client's order. Replies
 * go out as each request completes, in any order, as the protocol allows.
 */

export interface NbdWriteFlags {
  /** Force unit access: the write must be durable when it completes. */
  fua: boolean;
}

export interface NbdExportBackend {
  /** Bytes. */
  readonly size: number;
  readonly readOnly?: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  /** `data` is the server's to drop once this settles: a backend that keeps it past then copies. */
  write(offset: number, data: Buffer, flags: NbdWriteFlags): Promise<void>;
  /** Without it, zeroes are written as a buffer of zeros. */
  writeZeroes?(offset: number, length: number, flags: NbdWriteFlags): Promise<void>;
  /** Without it, TRIM is not offered. */
  trim?(offset: number, length: number): Promise<void>;
  /** Every write completed before the flush was asked is durable once it settles. */
  flush(): Promise<void>;
}

/** An error a backend throws to answer with a particular NBD errno (EIO otherwise). */
export class NbdBackendError extends Error {
  readonly errno: NbdErrnoName;
  constructor(errno: NbdErrnoName, message: string) {
    super(message);
    this.name = 'NbdBackendError';
    this.errno = errno;
  }
}

export interface NbdServeOptions {
  exports: ReadonlyMap<string, NbdExportBackend>;
  /** Largest request accepted (default 32 MiB, the spec's default). */
  maxRequestBytes?: number;
  /** Protocol violations and backend failures, for the owner's log. */
  onError?: (err: Error) => void;
  /** Write payload held unanswered before the server stops taking requests (default 64 MiB). */
  maxBytesInFlight?: number;
}

/** Write payload the server holds (received, not yet answered) before it stops taking requests. */
const MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

/** One client connection, from its greeting until it closes. */
export class NbdServerConnection {
  readonly #socket: Duplex;
  readonly #exports: ReadonlyMap<string, NbdExportBackend>;
  readonly #maxRequest: number;
  readonly #onError: (err: Error) => void;
  readonly #maxInFlight: number;
  readonly #input = new ByteQueue();
  readonly #options: NbdServerOptions;
  readonly closed: Promise<void>;
  #backend: NbdExportBackend | null = null;
  #exportName: string | null = null;
  #inFlight = 0;
  #bytesInFlight = 0;
  #paused = false;
  #disconnecting = false;
  #done = false;

  constructor(socket: Duplex, options: NbdServeOptions) {
    this.#socket = socket;
    this.#exports = options.exports;
    this.#maxRequest = options.maxRequestBytes ?? NBD_DEFAULT_BLOCK_SIZES.max;
    this.#onError = options.onError ?? (() => undefined);
    this.#maxInFlight = options.maxBytesInFlight ?? MAX_BYTES_IN_FLIGHT;
    this.#options = new NbdServerOptions({
      lookup: (name) => this.#info(name),
      names: () => [...this.#exports.keys()],
      send: (b) => this.#socket.write(b),
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => (this.#done = true));
    socket.on('error', (err: Error) => this.#onError(err));
    socket.on('data', (chunk: Buffer) => {
      this.#input.push(chunk);
      this.#parse();
    });
    socket.write(serverGreeting());
  }

  /** The export the client chose; null during the handshake. */
  get exportName(): string | null {
    return this.#exportName;
  }

  /** Drops the connection now: requests in flight get no reply. */
  close(): void {
    this.#socket.destroy();
  }

  #info(name: string): NbdExportInfo | undefined {
    const b = this.#exports.get(name);
    if (b === undefined) return undefined;
    const F = NBD_TRANSMISSION_FLAG;
    let flags = F.HAS_FLAGS | F.SEND_FLUSH | F.SEND_FUA | F.SEND_WRITE_ZEROES;
    if (b.readOnly === true) flags |= F.READ_ONLY;
    if (b.trim !== undefined) flags |= F.SEND_TRIM;
    return { size: b.size, transmissionFlags: flags, blockSizes: { min: 1, preferred: 4096, max: this.#maxRequest } };
  }

  #parse(): void {
    try {
      if (this.#backend === null) {
        const outcome = this.#options.step(this.#input);
        if (outcome.kind === 'wait') return;
        if (outcome.kind === 'end') {
          this.#socket.end();
          return;
        }
        this.#backend = this.#exports.get(outcome.name)!;
        this.#exportName = outcome.name;
      }
      // Paused: the socket is not read, and what it already delivered waits here too.
      while (!this.#done && !this.#disconnecting && !this.#paused && this.#request()) {
        /* one request per turn of the loop */
      }
    } catch (e) {
      this.#onError(e instanceof Error ? e : new Error(String(e)));
      this.#socket.destroy();
    }
  }

  /** Parses and dispatches one request; false when more bytes are needed. */
  #request(): boolean {
    const input = this.#input;
    if (input.length < NBD_SIZE.REQUEST_HEADER) return false;
    const h = input.peek(NBD_SIZE.REQUEST_HEADER);
    if (h.readUInt32BE(0) !== NBD_MAGIC.REQUEST) throw new NbdProtocolViolation('bad request magic');
    const flags = h.readUInt16BE(4);
    const type = h.readUInt16BE(6);
    const offset = h.readBigUInt64BE(16);
    const length = h.readUInt32BE(24);
    const payload = type === NBD_CMD.WRITE ? length : 0;
    // A payload this server would never accept is not read to be refused: the stream is dropped.
    if (payload > this.#maxRequest) throw new NbdProtocolViolation(`write of ${length} bytes`);
    if (input.length < NBD_SIZE.REQUEST_HEADER + payload) return false;
    const cookie = Buffer.from(input.take(NBD_SIZE.REQUEST_HEADER).subarray(8, 16));
    const data = payload > 0 ? input.take(payload) : null;
    if (type === NBD_CMD.DISC) {
      this.#disconnecting = true;
      this.#endWhenIdle();
      return false;
    }
    this.#inFlight++;
    this.#bytesInFlight += payload;
    if (this.#bytesInFlight > this.#maxInFlight && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
    const settle = (errno: number, reply: Buffer | null): void => {
      this.#inFlight--;
      this.#bytesInFlight -= payload;
      this.#reply(cookie, errno, reply);
      if (this.#disconnecting) this.#endWhenIdle();
      if (this.#paused && this.#bytesInFlight <= this.#maxInFlight / 2) {
        this.#paused = false;
        this.#socket.resume();
        this.#parse(); // the requests that arrived before the pause
      }
    };
    this.#dispatch(type, flags, offset, length, data).then(
      (reply) => settle(0, reply),
      (e: unknown) => {
        if (!(e instanceof NbdBackendError)) this.#onError(e instanceof Error ? e : new Error(String(e)));
        settle(NBD_ERRNO[e instanceof NbdBackendError ? e.errno : 'EIO'], null);
      },
    );
    return true;
  }

  /** Checks the request and calls the backend (synchronously: the call order is the arrival order). */
  #dispatch(
    type: number,
    flags: number,
    offset64: bigint,
    length: number,
    data: Buffer | null,
  ): Promise<Buffer | null> {
    const b = this.#backend!;
    const fua = (flags & NBD_CMD_FLAG.FUA) !== 0;
    const refuse = (errno: NbdErrnoName, why: string): Promise<never> =>
      Promise.reject(new NbdBackendError(errno, why));
    if (type === NBD_CMD.FLUSH) return b.flush().then(() => null);
    const ranged = [NBD_CMD.READ, NBD_CMD.WRITE, NBD_CMD.TRIM, NBD_CMD.WRITE_ZEROES] as number[];
    if (!ranged.includes(type)) return refuse('EINVAL', `command ${type} is not supported`);
    if (offset64 + BigInt(length) > BigInt(b.size))
      return refuse('EINVAL', `${offset64}+${length} lies past the end (${b.size})`);
    if (length > this.#maxRequest) return refuse('EINVAL', `request of ${length} bytes`);
    const offset = Number(offset64);
    if (type === NBD_CMD.READ) return b.read(offset, length);
    if (b.readOnly === true) return refuse('EPERM', 'the export is read-only');
    if (type === NBD_CMD.WRITE) return b.write(offset, data!, { fua }).then(() => null);
    if (type === NBD_CMD.TRIM) {
      if (b.trim === undefined) return refuse('EINVAL', 'TRIM is not offered');
      return b.trim(offset, length).then(() => null);
    }
    if (b.writeZeroes !== undefined) return b.writeZeroes(offset, length, { fua }).then(() => null);
    return b.write(offset, Buffer.alloc(length), { fua }).then(() => null);
  }

  #reply(cookie: Buffer, errno: number, data: Buffer | null): void {
    if (this.#done) return;
    const h = Buffer.allocUnsafe(NBD_SIZE.SIMPLE_REPLY_HEADER);
    h.writeUInt32BE(NBD_MAGIC.SIMPLE_REPLY, 0);
    h.writeUInt32BE(errno, 4);
    cookie.copy(h, 8);
    if (data === null) {
      this.#socket.write(h);
      return;
    }
    this.#socket.cork();
    this.#socket.write(h);
    this.#socket.write(data);
    this.#socket.uncork();
  }

  /** NBD_CMD_DISC: what is in flight is answered first, then the server closes its side. */
  #endWhenIdle(): void {
    if (this.#inFlight === 0 && !this.#done) this.#socket.end();
  }
}

/** Serves one connection (see NbdServerConnection). */
export function serveNbd(socket: Duplex, options: NbdServeOptions): NbdServerConnection {
  return new NbdServerConnection(socket, options);
}

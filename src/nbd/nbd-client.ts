import { createConnection, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { MamoriError } from '../core/mamori-error.js';
import { NbdError } from './nbd-error.js';
import { NbdHandshake, type NbdNegotiated, type NbdTlsOptions } from './nbd-handshake.js';
import {
  NBD_CMD,
  NBD_CMD_FLAG,
  decodeTransmissionFlags,
  type NbdStatusDescriptor,
  type NbdTransmissionFlags,
} from './nbd-protocol.js';
import { NbdTransmission, type NbdDisconnectOptions } from './nbd-transmission.js';
import { ReusedReadBuffer } from './reused-read-buffer.js';

/**
 * Where the server is. `stream`: a connection made already (a site's cycle stream: TLS to the
 * peer's API, upgraded to carry NBD), named by `label` in messages.
 */
export type NbdEndpoint = { socketPath: string } | { host: string; port: number } | { stream: Duplex; label: string };

export interface NbdConnectOptions {
  exportName: string;
  /** Start TLS before anything else and verify the server against `ca`. */
  tls?: NbdTlsOptions;
  /** Meta contexts to select, e.g. 'base:allocation', 'qemu:dirty-bitmap:NAME'. All must be granted. */
  metaContexts?: readonly string[];
  /** Bound on connecting and negotiating (default 30 s). */
  timeoutMs?: number;
  /** Default bound on each request (default 120 s; 0 for none). */
  requestTimeoutMs?: number;
}

export interface NbdRequestOptions {
  timeoutMs?: number;
}
export interface NbdReadOptions extends NbdRequestOptions {
  /**
   * Read into this buffer (at least `length` bytes; the result is its first `length` bytes)
   * instead of a new one: a copy loop that reuses its buffers allocates nothing per request.
   */
  into?: Buffer;
}
export interface NbdWriteOptions extends NbdRequestOptions {
  /** Force unit access: the reply comes once the data is on stable storage. */
  fua?: boolean;
}
export interface NbdWriteZeroesOptions extends NbdWriteOptions {
  /** Keep the area allocated (no hole). */
  noHole?: boolean;
  /** Fail fast with ENOTSUP unless zeroing is faster than writing (needs canFastZero). */
  fastZero?: boolean;
}
export interface NbdBlockStatusOptions extends NbdRequestOptions {
  /** Ask for a single extent (NBD_CMD_FLAG_REQ_ONE). */
  reqOne?: boolean;
}

export interface NbdBlockSizes {
  min: number;
  preferred: number;
  max: number;
}

export interface NbdExtent {
  offset: number;
  length: number;
  flags: number;
}

/** Largest READ/WRITE sent even if the server allows more. */
const MAX_IO = 32 * 1024 * 1024;
/**
 * read()/write() calls go out as pieces of at most this size, PIPELINE of them in flight:
 * QEMU works on 16 requests per client at once and cannot overlap the disk I/O of one
 * request with its transfer. Against qemu-storage-daemon on 2 cores, 4 MiB x 8 moved
 * 256 MiB about twice as fast as 32 MiB pieces.
 */
const SPLIT_IO = 4 * 1024 * 1024;
const PIPELINE = 8;
/** WRITE_ZEROES and TRIM carry no payload; they are split at this size (a 32-bit length field). */
const MAX_EFFECT = 1024 * 1024 * 1024;
const MAX_STATUS = 0x80000000;

/**
 * An NBD client (NetworkBlockDevice/nbd doc/proto.md): fixed newstyle handshake with
 * optional TLS, structured replies and meta contexts (NbdHandshake); in transmission,
 * requests are pipelined, each with its own 64-bit cookie, and replies are matched in
 * any order (NbdTransmission). This class is the command layer on top: it checks ranges,
 * alignment and what the server advertised, and splits large requests.
 */
export class NbdClient {
  readonly #label: string;
  readonly #n: NbdNegotiated;
  readonly #flags: NbdTransmissionFlags;
  readonly #wire: NbdTransmission;

  private constructor(
    negotiated: NbdNegotiated,
    label: string,
    requestTimeoutMs: number,
    reads: ReusedReadBuffer | null,
  ) {
    this.#n = negotiated;
    this.#label = label;
    this.#flags = decodeTransmissionFlags(negotiated.transmissionFlags);
    this.#wire = new NbdTransmission(negotiated, label, requestTimeoutMs, reads);
  }

  /** Connects, negotiates and enters the transmission phase. */
  static async connect(endpoint: NbdEndpoint, options: NbdConnectOptions): Promise<NbdClient> {
    const unix = 'socketPath' in endpoint;
    const label =
      'stream' in endpoint
        ? endpoint.label
        : unix
          ? `NBD server at ${endpoint.socketPath}`
          : `NBD server at ${endpoint.host}:${endpoint.port}`;
    const timeoutMs = options.timeoutMs ?? 30_000;
    // A plain socket of our own reads into one reused buffer (TLS reads its socket itself).
    const reads = !('stream' in endpoint) && options.tls === undefined ? new ReusedReadBuffer() : null;
    const onread = reads === null ? {} : { onread: reads.onread };
    const socket =
      'stream' in endpoint
        ? // NBD needs only the byte stream (no TLS is started on one of these): see the guard below.
          (endpoint.stream as Socket)
        : unix
          ? createConnection({ path: endpoint.socketPath, ...onread })
          : createConnection({ host: endpoint.host, port: endpoint.port, ...onread });
    reads?.attach(socket);
    let timedOut = false;
    let expire: (e: Error) => void = () => undefined;
    // The deadline rejects by itself, whatever stage the negotiation waits in.
    const deadline = new Promise<never>((_, reject) => (expire = reject));
    deadline.catch(() => undefined);
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
      expire(new Error('connect deadline passed'));
    }, timeoutMs);
    try {
      if (!('stream' in endpoint))
        await Promise.race([
          deadline,
          new Promise<void>((resolve, reject) => {
            socket.once('connect', resolve);
            socket.once('error', reject);
            socket.once('close', () => reject(new Error('socket closed')));
          }),
        ]).catch((err: Error) => {
          throw new NbdError(
            'NBD_CONNECT_FAILED',
            `cannot connect to ${label}: ${err.message}. Check that the server runs and the address is right.`,
            { cause: err, details: { endpoint } },
          );
        });
      if (!('stream' in endpoint))
        socket.removeAllListeners('connect').removeAllListeners('error').removeAllListeners('close');
      if ('host' in endpoint) socket.setNoDelay(true);
      if ('stream' in endpoint && options.tls !== undefined)
        throw new MamoriError('INVALID_INPUT', `${label}: TLS is not started on a stream made already`);
      const handshake = new NbdHandshake(socket, {
        exportName: options.exportName,
        label,
        defaultServername: 'host' in endpoint ? endpoint.host : 'localhost',
        ...(options.tls === undefined ? {} : { tls: options.tls }),
        ...(options.metaContexts === undefined ? {} : { metaContexts: options.metaContexts }),
      }).run();
      handshake.catch(() => undefined); // if the deadline wins, the handshake's own end is of no interest
      const negotiated = await Promise.race([deadline, handshake]);
      // with TLS the plain socket lives on underneath; its errors surface as the TLS socket closing
      if (negotiated.socket !== socket) socket.on('error', () => undefined);
      return new NbdClient(negotiated, label, options.requestTimeoutMs ?? 120_000, reads);
    } catch (err) {
      socket.destroy();
      if (timedOut) {
        throw new NbdError('NBD_TIMEOUT', `connecting to ${label} did not finish within ${timeoutMs} ms`, {
          cause: err,
          details: { endpoint, timeoutMs },
        });
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get size(): number {
    return this.#n.size;
  }
  get transmissionFlags(): NbdTransmissionFlags {
    return this.#flags;
  }
  get blockSizes(): NbdBlockSizes {
    return { ...this.#n.blockSizes };
  }
  /** Meta context name -> id the server assigned on this connection. */
  get metaContextIds(): ReadonlyMap<string, number> {
    return this.#n.metaContexts;
  }
  get structuredReplies(): boolean {
    return this.#n.structuredReplies;
  }
  get tls(): boolean {
    return this.#n.tls;
  }
  get connected(): boolean {
    return this.#wire.connected;
  }
  /** Requests sent and not yet settled. */
  get inFlight(): number {
    return this.#wire.inFlight;
  }
  /** Largest READ/WRITE this client sends in one request. */
  get maxRequestLength(): number {
    const { min, max } = this.#n.blockSizes;
    return Math.max(min, Math.floor(Math.min(max, MAX_IO) / min) * min);
  }

  async read(offset: number, length: number, options: NbdReadOptions = {}): Promise<Buffer> {
    this.#checkRange('read', offset, length);
    if (options.into !== undefined && options.into.length < length) {
      throw new MamoriError('INVALID_INPUT', `read of ${length} bytes into a buffer of ${options.into.length}`, {
        details: { length, bufferLength: options.into.length },
      });
    }
    const buffer = options.into?.subarray(0, length) ?? Buffer.allocUnsafe(length);
    await this.#split(offset, length, this.#ioPiece(), (at, n) =>
      this.#wire.send(NBD_CMD.READ, 0, at, n, null, buffer.subarray(at - offset, at - offset + n), options.timeoutMs),
    );
    return buffer;
  }

  async write(offset: number, data: Buffer, options: NbdWriteOptions = {}): Promise<void> {
    this.#checkWritable('write');
    this.#checkRange('write', offset, data.length);
    const flags = this.#fua(options.fua);
    await this.#split(offset, data.length, this.#ioPiece(), (at, n) =>
      this.#wire.send(
        NBD_CMD.WRITE,
        flags,
        at,
        n,
        data.subarray(at - offset, at - offset + n),
        null,
        options.timeoutMs,
      ),
    );
  }

  async writeZeroes(offset: number, length: number, options: NbdWriteZeroesOptions = {}): Promise<void> {
    this.#checkWritable('write zeroes');
    if (!this.#flags.canWriteZeroes) throw this.#unsupported('write zeroes (NBD_FLAG_SEND_WRITE_ZEROES not set)');
    if (options.fastZero === true && !this.#flags.canFastZero)
      throw this.#unsupported('fast zero (NBD_FLAG_SEND_FAST_ZERO not set)');
    this.#checkRange('write zeroes', offset, length);
    const flags =
      this.#fua(options.fua) |
      (options.noHole === true ? NBD_CMD_FLAG.NO_HOLE : 0) |
      (options.fastZero === true ? NBD_CMD_FLAG.FAST_ZERO : 0);
    await this.#split(offset, length, MAX_EFFECT, (at, n) =>
      this.#wire.send(NBD_CMD.WRITE_ZEROES, flags, at, n, null, null, options.timeoutMs),
    );
  }

  async trim(offset: number, length: number, options: NbdWriteOptions = {}): Promise<void> {
    this.#checkWritable('trim');
    if (!this.#flags.canTrim) throw this.#unsupported('trim (NBD_FLAG_SEND_TRIM not set)');
    this.#checkRange('trim', offset, length);
    const flags = this.#fua(options.fua);
    await this.#split(offset, length, MAX_EFFECT, (at, n) =>
      this.#wire.send(NBD_CMD.TRIM, flags, at, n, null, null, options.timeoutMs),
    );
  }

  async flush(options: NbdRequestOptions = {}): Promise<void> {
    if (!this.#flags.canFlush) throw this.#unsupported('flush (NBD_FLAG_SEND_FLUSH not set)');
    await this.#wire.send(NBD_CMD.FLUSH, 0, 0, 0, null, null, options.timeoutMs);
  }

  /**
   * One NBD_CMD_BLOCK_STATUS for `contextName`. The server may describe less than asked
   * (use extents() to cover a whole range); extents are clipped to the range asked.
   */
  async blockStatus(
    offset: number,
    length: number,
    contextName: string,
    options: NbdBlockStatusOptions = {},
  ): Promise<NbdExtent[]> {
    const id = this.#n.metaContexts.get(contextName);
    if (id === undefined) {
      throw this.#unsupported(
        `block status for '${contextName}' (not negotiated; this connection has ${[...this.#n.metaContexts.keys()].join(', ') || 'no meta contexts'})`,
      );
    }
    this.#checkRange('block status', offset, length);
    if (length === 0) return [];
    const asked = Math.min(length, Math.floor(MAX_STATUS / this.#n.blockSizes.min) * this.#n.blockSizes.min);
    const flags = options.reqOne === true ? NBD_CMD_FLAG.REQ_ONE : 0;
    const status = (await this.#wire.send(
      NBD_CMD.BLOCK_STATUS,
      flags,
      offset,
      asked,
      null,
      null,
      options.timeoutMs,
    )) as Map<number, NbdStatusDescriptor[]>;
    const end = offset + asked;
    const extents: NbdExtent[] = [];
    let at = offset;
    for (const d of status.get(id) ?? []) {
      if (at >= end) break;
      const n = Math.min(d.length, end - at);
      extents.push({ offset: at, length: n, flags: d.flags });
      at += n;
    }
    return extents;
  }

  /** Extents covering [offset, offset + length) for `contextName`, looping from the end of the last one; neighbours with equal flags merged. */
  async extents(
    contextName: string,
    offset = 0,
    length = this.size - offset,
    options: NbdRequestOptions = {},
  ): Promise<NbdExtent[]> {
    this.#checkRange('block status', offset, length);
    const out: NbdExtent[] = [];
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const part = await this.blockStatus(at, end - at, contextName, options);
      for (const e of part) {
        const last = out[out.length - 1];
        if (last !== undefined && last.flags === e.flags && last.offset + last.length === e.offset)
          last.length += e.length;
        else out.push({ ...e });
      }
      const tail = part[part.length - 1];
      // A reply that describes nothing would loop forever: the spec requires progress.
      if (tail === undefined || tail.offset + tail.length <= at) {
        throw new NbdError(
          'NBD_PROTOCOL_ERROR',
          `${this.#label} answered block status for '${contextName}' at ${at} without describing any of it`,
          { details: { offset: at, context: contextName } },
        );
      }
      at = tail.offset + tail.length;
    }
    return out;
  }

  /** Soft disconnect: lets requests in flight finish (bounded), sends NBD_CMD_DISC and closes. */
  disconnect(options: NbdDisconnectOptions = {}): Promise<void> {
    return this.#wire.disconnect(options);
  }

  #ioPiece(): number {
    const { min } = this.#n.blockSizes;
    return Math.max(min, Math.floor(Math.min(this.maxRequestLength, SPLIT_IO) / min) * min);
  }

  /** Runs `one` over [offset, offset + length) in pieces of `step`, at most PIPELINE at a time; the first failure wins. */
  async #split(
    offset: number,
    length: number,
    step: number,
    one: (at: number, n: number) => Promise<unknown>,
  ): Promise<void> {
    const end = offset + length;
    let next = offset;
    let failed = false;
    const worker = async (): Promise<void> => {
      while (next < end && !failed) {
        const at = next;
        const n = Math.min(step, end - at);
        next += n;
        try {
          await one(at, n);
        } catch (err) {
          failed = true;
          throw err;
        }
      }
    };
    const results = await Promise.allSettled(
      Array.from({ length: Math.min(PIPELINE, Math.ceil(length / step)) }, worker),
    );
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected !== undefined) throw rejected.reason;
  }

  #checkRange(op: string, offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.#n.size
    ) {
      throw new MamoriError('OUT_OF_RANGE', `${op} ${offset}+${length} is outside the export (size ${this.#n.size})`, {
        details: { offset, length, size: this.#n.size },
      });
    }
    const { min } = this.#n.blockSizes;
    if (offset % min !== 0 || length % min !== 0) {
      throw new MamoriError(
        'INVALID_INPUT',
        `${op} ${offset}+${length} is not aligned to the export's minimum block size ${min}`,
        { details: { offset, length, minBlockSize: min } },
      );
    }
  }

  #checkWritable(op: string): void {
    if (this.#flags.readOnly) throw this.#unsupported(`${op} (the export is read-only)`);
  }

  #fua(fua: boolean | undefined): number {
    if (fua !== true) return 0;
    if (!this.#flags.canFua) throw this.#unsupported('FUA (NBD_FLAG_SEND_FUA not set)');
    return NBD_CMD_FLAG.FUA;
  }

  #unsupported(what: string): NbdError {
    return new NbdError('NBD_UNSUPPORTED', `${this.#label} does not support ${what}`, { details: { what } });
  }
}

import type { Socket } from 'node:net';
import { NbdError } from './nbd-error.js';
import type { NbdNegotiated } from './nbd-handshake.js';
import { PendingRequest, type PendingResult } from './nbd-pending-request.js';
import { NBD_CMD, NbdProtocolViolation, encodeRequestHeader } from './nbd-protocol.js';
import { NbdReplyReader } from './nbd-reply-reader.js';
import type { ReusedReadBuffer } from './reused-read-buffer.js';

export interface NbdDisconnectOptions {
  /** How long to let requests in flight finish before NBD_CMD_DISC (default 5 s). */
  drainTimeoutMs?: number;
  /** How long to wait for the server to close after NBD_CMD_DISC before dropping the socket (default 2 s). */
  closeTimeoutMs?: number;
}

/**
 * The transmission phase on the wire, below the commands NbdClient offers: each request
 * goes out with its own 64-bit cookie and a timeout, replies (simple or structured) are
 * matched to their request in any order, and a protocol violation, a dropped connection
 * or NBD_CMD_DISC fails whatever is still in flight. It knows nothing of what a command
 * means; NbdClient checks ranges, flags and splits before calling send().
 */
export class NbdTransmission {
  readonly #socket: Socket;
  readonly #label: string;
  readonly #contextIds: ReadonlySet<number>;
  readonly #requestTimeoutMs: number;
  readonly #reader: NbdReplyReader;
  readonly #pending = new Map<bigint, PendingRequest>();
  readonly #closed: Promise<void>;
  #nextCookie = 1n;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #failure: NbdError | null = null;

  /** `reads`: the socket reads into one reused buffer; each read is parsed as a transient view. */
  constructor(
    negotiated: NbdNegotiated,
    label: string,
    requestTimeoutMs: number,
    reads: ReusedReadBuffer | null = null,
  ) {
    this.#socket = negotiated.socket;
    this.#label = label;
    this.#contextIds = new Set(negotiated.metaContexts.values());
    this.#requestTimeoutMs = requestTimeoutMs;
    this.#reader = new NbdReplyReader(negotiated.structuredReplies, {
      lookup: (cookie) => this.#pending.get(cookie),
      simple: (cookie, error) => this.#completed(cookie, (p) => p.simple(error)),
      data: (h, offset, length) => this.#completed(h.cookie, (p) => p.data(h, offset, length)),
      chunk: (h, payload) => this.#completed(h.cookie, (p) => p.chunk(h, payload)),
    });
    this.#closed = new Promise((resolve) =>
      this.#socket.once('close', () => {
        this.#onClose();
        resolve();
      }),
    );
    if (reads !== null) reads.take((view) => this.#push(view, true));
    else this.#socket.on('data', (chunk: Buffer) => this.#push(chunk, false));
    this.#socket.on('error', (err) => {
      this.#failure ??= new NbdError('NBD_DISCONNECTED', `connection to ${this.#label} failed: ${err.message}`, {
        cause: err,
      });
    });
    if (negotiated.leftover.length > 0) this.#push(negotiated.leftover, false);
  }

  get connected(): boolean {
    return this.#state === 'open';
  }
  /** Requests sent and not yet settled. */
  get inFlight(): number {
    let n = 0;
    for (const p of this.#pending.values()) if (!p.settled) n += 1;
    return n;
  }

  /**
   * Sends one request and resolves with its result: the read data lands in `buffer`,
   * block status resolves to descriptors per context id. `timeoutMs` 0 waits forever.
   */
  send(
    command: number,
    flags: number,
    offset: number,
    length: number,
    payload: Buffer | null,
    buffer: Buffer | null,
    timeoutMs = this.#requestTimeoutMs,
  ): Promise<PendingResult> {
    if (this.#state !== 'open') {
      return Promise.reject(
        this.#failure ??
          new NbdError(
            'NBD_DISCONNECTED',
            `not connected to ${this.#label} (${this.#state}); the request was not sent`,
            { details: { sent: false } },
          ),
      );
    }
    const cookie = this.#nextCookie++;
    const p = new PendingRequest(cookie, command, offset, length, buffer, this.#contextIds);
    this.#pending.set(cookie, p);
    if (timeoutMs > 0) {
      p.setTimer(
        setTimeout(
          () =>
            p.fail(
              new NbdError(
                'NBD_TIMEOUT',
                `${p.description} got no complete reply from ${this.#label} within ${timeoutMs} ms; its outcome is unknown`,
                { details: { command: p.description, timeoutMs } },
              ),
            ),
          timeoutMs,
        ),
      );
    }
    const header = encodeRequestHeader({ flags, type: command, cookie, offset, length });
    if (payload === null) {
      this.#socket.write(header);
    } else {
      this.#socket.cork();
      this.#socket.write(header);
      this.#socket.write(payload);
      this.#socket.uncork();
    }
    return p.promise;
  }

  /** Soft disconnect: lets requests in flight finish (bounded), sends NBD_CMD_DISC and closes. */
  async disconnect(options: NbdDisconnectOptions = {}): Promise<void> {
    if (this.#state !== 'open') return this.#closed;
    this.#state = 'closing';
    const inFlight = [...this.#pending.values()].map((p) => p.promise.catch(() => undefined));
    await Promise.race([Promise.all(inFlight), delay(options.drainTimeoutMs ?? 5000)]);
    // the server answers what is still in flight, then closes (TLS included); we wait for that
    if (!this.#socket.destroyed)
      this.#socket.write(
        encodeRequestHeader({ flags: 0, type: NBD_CMD.DISC, cookie: this.#nextCookie++, offset: 0, length: 0 }),
      );
    await Promise.race([this.#closed, delay(options.closeTimeoutMs ?? 2000)]);
    this.#socket.destroy();
    await this.#closed;
  }

  #completed(cookie: bigint, handle: (p: PendingRequest) => boolean): void {
    const p = this.#pending.get(cookie)!;
    if (!handle(p)) return;
    this.#pending.delete(cookie);
    // the spec asks a client that sees ESHUTDOWN to disconnect softly
    if (p.serverError?.errno === 'ESHUTDOWN') void this.disconnect({ drainTimeoutMs: 1000 });
  }

  #push(chunk: Buffer, transient: boolean): void {
    if (this.#state === 'closed') return;
    try {
      this.#reader.push(chunk, transient);
    } catch (err) {
      const message = err instanceof NbdProtocolViolation ? err.message : String(err);
      this.#failure = new NbdError(
        'NBD_PROTOCOL_ERROR',
        `NBD protocol error from ${this.#label}: ${message}; the connection was dropped`,
        { cause: err, details: { phase: 'transmission' } },
      );
      this.#state = 'closed'; // nothing more is parsed or sent; 'close' rejects what is in flight
      this.#socket.destroy(); // hard disconnect, as the spec asks for invalid replies
    }
  }

  #onClose(): void {
    this.#state = 'closed';
    const open = [...this.#pending.values()].filter((p) => !p.settled);
    const failure =
      this.#failure ??
      new NbdError(
        'NBD_DISCONNECTED',
        `connection to ${this.#label} closed with ${open.length} request(s) in flight; their outcome is unknown`,
        { details: { inFlight: open.length } },
      );
    for (const p of open) p.fail(failure);
    this.#pending.clear();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

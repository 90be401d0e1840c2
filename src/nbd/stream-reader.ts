import type { Socket } from 'node:net';
import { NbdError } from './nbd-error.js';

/**
 * Reads exact byte counts from a socket during the handshake, where each step waits for
 * the server's answer. Detach it before handing the socket to TLS or to the
 * transmission-phase parser; bytes already received are returned by detach().
 */
export class StreamReader {
  #socket: Socket | null = null;
  #chunks: Buffer[] = [];
  #available = 0;
  #waiter: { length: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  #failure: Error | null = null;
  readonly #label: string;
  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk);
    this.#available += chunk.length;
    this.#serve();
  };
  readonly #onError = (err: Error): void => {
    this.#fail(
      err instanceof NbdError
        ? err
        : new NbdError('NBD_DISCONNECTED', `connection to ${this.#label} failed during negotiation: ${err.message}`, {
            cause: err,
          }),
    );
  };
  readonly #onClose = (): void => {
    this.#fail(new NbdError('NBD_DISCONNECTED', `${this.#label} closed the connection during negotiation`));
  };

  constructor(label: string) {
    this.#label = label;
  }

  attach(socket: Socket): void {
    this.#socket = socket;
    this.#failure = null;
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('end', this.#onClose);
    socket.on('close', this.#onClose);
  }

  /** Stops listening; returns bytes that arrived but were not read. */
  detach(): Buffer {
    const s = this.#socket;
    if (s !== null) {
      s.off('data', this.#onData);
      s.off('error', this.#onError);
      s.off('end', this.#onClose);
      s.off('close', this.#onClose);
    }
    this.#socket = null;
    const rest = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#available = 0;
    return rest;
  }

  /** Resolves with exactly `length` bytes. */
  read(length: number): Promise<Buffer> {
    if (this.#waiter !== null) return Promise.reject(new Error('StreamReader: one read at a time'));
    return new Promise((resolve, reject) => {
      this.#waiter = { length, resolve, reject };
      this.#serve();
    });
  }

  #serve(): void {
    const w = this.#waiter;
    if (w === null) return;
    if (this.#available >= w.length) {
      this.#waiter = null;
      w.resolve(this.#take(w.length));
    } else if (this.#failure !== null) {
      this.#waiter = null;
      w.reject(this.#failure);
    }
  }

  #fail(err: Error): void {
    if (this.#failure === null) this.#failure = err;
    this.#serve();
  }

  #take(length: number): Buffer {
    const first = this.#chunks[0];
    if (first !== undefined && first.length >= length) {
      const out = first.subarray(0, length);
      if (first.length === length) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(length);
      this.#available -= length;
      return out;
    }
    const all = Buffer.concat(this.#chunks);
    this.#chunks = all.length > length ? [all.subarray(length)] : [];
    this.#available -= length;
    return all.subarray(0, length);
  }
}

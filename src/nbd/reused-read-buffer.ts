import type { Socket } from 'node:net';

/** Bytes of one read: what a read of QEMU's export hands over at once when data is waiting. */
const READ_BUFFER_BYTES = 256 * 1024;

/**
 * Reads of a socket we connect ourselves, into one buffer used again and again (net's `onread`
 * option), instead of the new 64 KiB buffer Node allocates for every read. A copy that reads a
 * disk at 100 MiB/s through a plain socket allocated 1,600 of those a second, and V8 answers
 * memory allocated outside its heap at that rate with major collections of the whole heap:
 * perf showed the source site's marking threads using more CPU than its main thread.
 *
 * Until `take()`, each read is copied into a buffer of its own and emitted as a normal 'data'
 * event, so the handshake reads the socket as any other. After it, the reads go to the taker as
 * views of the shared buffer, valid only during the call: the taker copies what it keeps.
 *
 * Not for a socket that TLS will wrap: TLS reads the socket's handle itself.
 */
export class ReusedReadBuffer {
  readonly #buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  #socket: Socket | null = null;
  #taker: ((view: Buffer) => void) | null = null;

  /** The `onread` option for net.createConnection. */
  readonly onread = {
    buffer: this.#buffer,
    callback: (nread: number, buffer: Uint8Array): boolean => {
      const view = Buffer.from(buffer.buffer, buffer.byteOffset, nread);
      if (this.#taker !== null) this.#taker(view);
      else this.#socket?.emit('data', Buffer.from(view));
      return true;
    },
  };

  /** The socket created with `onread`: until take(), reads are emitted on it as 'data'. */
  attach(socket: Socket): void {
    this.#socket = socket;
  }

  /** From now on each read goes to `taker` as a view into the shared buffer. */
  take(taker: (view: Buffer) => void): void {
    this.#taker = taker;
  }
}

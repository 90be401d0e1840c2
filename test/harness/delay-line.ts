import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';

/** Reads shorter than this start a read batch (readBatchMs); Node reads at most 64 KiB at once. */
const BATCH_BELOW_BYTES = 16 * 1024;

export interface DelayLineOptions {
  /** Every chunk is written this long after it was read, never sooner. */
  delayMs: number;
  /** Bytes read and not yet written at which reading pauses (TCP then holds the sender back). */
  maxBufferedBytes: number;
  /**
   * No chunk leaves before this time (performance.now() ms) plus delayMs: the forwarder accepts a
   * connection at once, but a real sender could only send once its SYN and the SYN-ACK had
   * crossed the link.
   */
  notBefore?: number;
  /** Whether dst may be written yet (false until the upstream socket connected: call open()). */
  open?: boolean;
  /**
   * After each read, leave src unread this long (ms, 0: never) so that what arrives meanwhile is
   * read at once: at 100 Mbit/s through tbf the segments come one by one, and a read and a timer
   * per segment cost several times the CPU. Bytes wait up to this much longer than delayMs.
   */
  readBatchMs?: number;
}

/**
 * One direction of one forwarded connection: reads src, writes each chunk to dst `delayMs`
 * after it was read, in order, with at most about `maxBufferedBytes` held. Order is kept by
 * construction (one FIFO, one writer), so chunks released late by a slow dst or a busy event
 * loop only queue behind each other. The end of src is passed on once everything before it is
 * written (a half close, as TCP has).
 */
export class DelayLine {
  readonly #src: Socket;
  readonly #dst: Socket;
  readonly #delayMs: number;
  readonly #max: number;
  readonly #notBefore: number;
  readonly #readBatchMs: number;
  #batchHold = false;
  #queue: { chunk: Buffer; due: number }[] = [];
  #buffered = 0;
  #open: boolean;
  #draining = false;
  #ended = false;
  #finished = false;
  #timer: NodeJS.Timeout | null = null;
  #timerDue = Infinity;
  /** Bytes written to dst so far. */
  bytes = 0;

  /** Bytes read and not yet written. */
  get buffered(): number {
    return this.#buffered;
  }

  constructor(src: Socket, dst: Socket, opts: DelayLineOptions) {
    this.#src = src;
    this.#dst = dst;
    this.#delayMs = opts.delayMs;
    this.#max = opts.maxBufferedBytes;
    this.#notBefore = opts.notBefore ?? 0;
    this.#open = opts.open ?? true;
    this.#readBatchMs = opts.readBatchMs ?? 0;
    src.on('data', (chunk: Buffer) => this.#onData(chunk));
    src.on('end', () => {
      this.#ended = true;
      this.#pump();
    });
  }

  /** dst is connected: queued chunks that are due may go. */
  open(): void {
    this.#open = true;
    this.#pump();
  }

  /** Stops: drops what is queued and cancels the timer (the connection is being torn down). */
  stop(): void {
    this.#finished = true;
    this.#queue = [];
    this.#buffered = 0;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #onData(chunk: Buffer): void {
    if (this.#finished) return;
    const due = Math.max(performance.now(), this.#notBefore) + this.#delayMs;
    this.#queue.push({ chunk, due });
    this.#buffered += chunk.length;
    if (this.#buffered >= this.#max) this.#src.pause();
    // A full read means more is waiting: keep reading. Only a trickle is worth waiting for.
    if (this.#readBatchMs > 0 && !this.#batchHold && chunk.length < BATCH_BELOW_BYTES) {
      this.#batchHold = true;
      this.#src.pause();
      setTimeout(() => {
        this.#batchHold = false;
        this.#maybeResume();
      }, this.#readBatchMs);
    }
    this.#pump();
  }

  #maybeResume(): void {
    // Resume below half the bound, not at it: one pause/resume per chunk would cost CPU.
    if (!this.#ended && !this.#finished && !this.#batchHold && this.#src.isPaused() && this.#buffered < this.#max / 2)
      this.#src.resume();
  }

  #pump(): void {
    if (this.#finished || !this.#open || this.#draining) return;
    const now = performance.now();
    while (this.#queue.length > 0 && this.#queue[0]!.due <= now) {
      const { chunk } = this.#queue.shift()!;
      this.#buffered -= chunk.length;
      this.bytes += chunk.length;
      if (!this.#dst.write(chunk)) {
        this.#draining = true;
        this.#dst.once('drain', () => {
          this.#draining = false;
          this.#pump();
        });
        break;
      }
    }
    this.#maybeResume();
    if (this.#draining) return;
    const head = this.#queue[0];
    if (head) this.#arm(head.due);
    else if (this.#ended) {
      this.#finished = true;
      this.#dst.end();
    }
  }

  /**
   * One timer at a time, for the head of the queue. Node may fire a timer up to a millisecond
   * before its time by the high-resolution clock; #pump re-checks `due`, so a chunk is never early.
   */
  #arm(due: number): void {
    if (this.#timer && this.#timerDue <= due) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerDue = due;
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        this.#timerDue = Infinity;
        this.#pump();
      },
      Math.max(1, Math.ceil(due - performance.now())),
    );
  }
}

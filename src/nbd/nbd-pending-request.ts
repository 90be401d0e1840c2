import { NbdError } from './nbd-error.js';
import {
  NBD_CMD,
  NBD_REPLY_FLAG,
  NBD_REPLY_TYPE,
  NbdProtocolViolation,
  chunkTypeName,
  commandName,
  decodeBlockStatus,
  decodeErrorChunk,
  decodeOffsetHole,
  errnoName,
  isErrorChunk,
  type NbdChunkHeader,
  type NbdStatusDescriptor,
} from './nbd-protocol.js';
import type { ReplyDestination } from './nbd-reply-reader.js';

/** Resolved value: the read buffer, block status descriptors per context id, or nothing. */
export type PendingResult = Buffer | Map<number, NbdStatusDescriptor[]> | undefined;

/**
 * One request in flight: collects the reply chunks for its cookie (in any order), checks
 * them against the spec, and settles when the simple reply or the chunk flagged DONE
 * arrives. Chunk handlers throw NbdProtocolViolation for replies the spec forbids.
 */
export class PendingRequest implements ReplyDestination {
  readonly cookie: bigint;
  readonly command: number;
  readonly offset: number;
  readonly length: number;
  readonly buffer: Buffer | null;
  readonly promise: Promise<PendingResult>;
  #resolve!: (v: PendingResult) => void;
  #reject!: (e: Error) => void;
  #settled = false;
  #timer: NodeJS.Timeout | undefined;
  #covered: Array<[number, number]> = [];
  #coveredBytes = 0;
  #error: NbdError | null = null;
  #status = new Map<number, NbdStatusDescriptor[]>();

  readonly #contextIds: ReadonlySet<number>;

  /** `contextIds`: the meta context ids negotiated (block status replies carry one chunk for each). */
  constructor(
    cookie: bigint,
    command: number,
    offset: number,
    length: number,
    buffer: Buffer | null,
    contextIds: ReadonlySet<number>,
  ) {
    this.#contextIds = contextIds;
    this.cookie = cookie;
    this.command = command;
    this.offset = offset;
    this.length = length;
    this.buffer = buffer;
    this.promise = new Promise<PendingResult>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  get settled(): boolean {
    return this.#settled;
  }

  /** The server error reported for this request, if any (to notice ESHUTDOWN). */
  get serverError(): NbdError | null {
    return this.#error;
  }

  get description(): string {
    return `${commandName(this.command)} ${this.offset}+${this.length}`;
  }

  setTimer(timer: NodeJS.Timeout): void {
    this.#timer = timer;
  }

  /*
   * The reply handlers return true when the reply is complete (simple reply, or the chunk
   * flagged DONE). A request that already failed (timeout) still takes its reply, so the
   * cookie stays known until then.
   */

  simple(error: number): boolean {
    if (error === 0 && this.command === NBD_CMD.BLOCK_STATUS)
      throw new NbdProtocolViolation('simple reply to a block status request');
    if (error !== 0) this.#serverError(error, '', undefined);
    this.#finish(true);
    return true;
  }

  data(header: NbdChunkHeader, offset: number, length: number): boolean {
    this.#cover(offset, length);
    return this.#doneIf(header);
  }

  chunk(header: NbdChunkHeader, payload: Buffer): boolean {
    const { type } = header;
    if (type === NBD_REPLY_TYPE.NONE) {
      if (payload.length !== 0 || (header.flags & NBD_REPLY_FLAG.DONE) === 0) {
        throw new NbdProtocolViolation('NBD_REPLY_TYPE_NONE must be empty and flagged DONE');
      }
    } else if (type === NBD_REPLY_TYPE.OFFSET_HOLE) {
      if (this.command !== NBD_CMD.READ) throw new NbdProtocolViolation(`hole chunk in reply to ${this.description}`);
      const hole = decodeOffsetHole(payload);
      this.#cover(hole.offset, hole.length);
      this.buffer!.fill(0, hole.offset - this.offset, hole.offset - this.offset + hole.length);
    } else if (type === NBD_REPLY_TYPE.BLOCK_STATUS) {
      if (this.command !== NBD_CMD.BLOCK_STATUS)
        throw new NbdProtocolViolation(`block status chunk in reply to ${this.description}`);
      const { contextId, descriptors } = decodeBlockStatus(payload);
      if (!this.#contextIds.has(contextId))
        throw new NbdProtocolViolation(`block status for meta context id ${contextId}, which was not negotiated`);
      if (this.#status.has(contextId))
        throw new NbdProtocolViolation(`two block status chunks for meta context id ${contextId}`);
      this.#status.set(contextId, descriptors);
    } else if (isErrorChunk(type)) {
      const known = type === NBD_REPLY_TYPE.ERROR || type === NBD_REPLY_TYPE.ERROR_OFFSET;
      const e = decodeErrorChunk(known ? type : NBD_REPLY_TYPE.ERROR, payload);
      if (e.offset !== undefined && (e.offset < this.offset || e.offset >= this.offset + this.length)) {
        throw new NbdProtocolViolation(`error offset ${e.offset} lies outside ${this.description}`);
      }
      this.#serverError(e.errno, e.message, e.offset, known ? undefined : type);
    } else {
      throw new NbdProtocolViolation(`unexpected ${chunkTypeName(type)} chunk in reply to ${this.description}`);
    }
    return this.#doneIf(header);
  }

  /** Rejects (connection lost, protocol error, timeout); a later reply is ignored. */
  fail(err: Error): void {
    if (this.#settled) return;
    this.#settle();
    this.#reject(err);
  }

  #cover(offset: number, length: number): void {
    const end = offset + length;
    if (offset < this.offset || end > this.offset + this.length) {
      throw new NbdProtocolViolation(`chunk ${offset}+${length} lies outside ${this.description}`);
    }
    for (const [s, e] of this.#covered) {
      if (offset < e && s < end)
        throw new NbdProtocolViolation(`chunk ${offset}+${length} overlaps an earlier chunk of ${this.description}`);
    }
    this.#covered.push([offset, end]);
    this.#coveredBytes += length;
  }

  #serverError(errno: number, message: string, offset: number | undefined, chunkType?: number): void {
    if (this.#error !== null) return; // the first error is the one reported
    const name = errnoName(errno);
    this.#error = new NbdError(
      'NBD_SERVER_ERROR',
      `the NBD server failed ${this.description}${offset === undefined ? '' : ` at offset ${offset}`}: ${name}${message ? ` (${message})` : ''}`,
      {
        errno: name,
        details: {
          errnoValue: errno,
          serverMessage: message,
          command: commandName(this.command),
          offset: this.offset,
          length: this.length,
          ...(offset === undefined ? {} : { errorOffset: offset }),
          ...(chunkType === undefined ? {} : { chunkType }),
        },
      },
    );
  }

  #doneIf(header: NbdChunkHeader): boolean {
    if ((header.flags & NBD_REPLY_FLAG.DONE) === 0) return false;
    this.#finish(false);
    return true;
  }

  #finish(simple: boolean): void {
    if (this.#error !== null) {
      this.fail(this.#error);
      return;
    }
    if (!simple && this.command === NBD_CMD.READ && this.#coveredBytes !== this.length) {
      throw new NbdProtocolViolation(
        `read reply covers ${this.#coveredBytes} of ${this.length} bytes of ${this.description}`,
      );
    }
    if (!simple && this.command === NBD_CMD.BLOCK_STATUS && this.#status.size !== this.#contextIds.size) {
      throw new NbdProtocolViolation(
        `block status reply has ${this.#status.size} chunks for ${this.#contextIds.size} meta contexts`,
      );
    }
    if (this.#settled) return;
    this.#settle();
    if (this.command === NBD_CMD.READ) this.#resolve(this.buffer ?? Buffer.alloc(0));
    else if (this.command === NBD_CMD.BLOCK_STATUS) this.#resolve(this.#status);
    else this.#resolve(undefined);
  }

  #settle(): void {
    this.#settled = true;
    clearTimeout(this.#timer);
  }
}

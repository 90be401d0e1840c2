import { Transform, type TransformCallback } from 'node:stream';
import { NBD_MAGIC, NBD_OPT, optionName } from './nbd-protocol.js';
import { NbdError } from './nbd-error.js';

/** Longest option data a client of one export needs (a name, a few meta context queries). */
const MAX_OPTION_DATA = 16 * 1024;
const REQUEST_MAGIC = Buffer.alloc(4);
REQUEST_MAGIC.writeUInt32BE(NBD_MAGIC.REQUEST);

/**
 * Sits between a client from another site and the recovery site's staging daemon, whose one
 * NBD server carries the exports of every open cycle: the client may only negotiate the
 * export of its own cycle. It reads the client's half of the handshake (its flags, then each
 * option) and lets through only the options a writer of one export needs, each naming that
 * export: GO, INFO, EXPORT_NAME, STRUCTURED_REPLY, SET/LIST_META_CONTEXT, ABORT. LIST (which
 * would name the other cycles' exports), STARTTLS and anything unknown end the connection.
 * Once the client sends its first transmission request (after a successful GO) every byte
 * passes unread, and the guard emits 'passthrough': its user may then take it out of the data
 * path (spliceCycleStream does).
 */
export class NbdOptionGuard extends Transform {
  readonly #exportName: string;
  #pending: Buffer = Buffer.alloc(0);
  #state: 'flags' | 'options' | 'passthrough' = 'flags';

  constructor(exportName: string) {
    super();
    this.#exportName = exportName;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.#state === 'passthrough') {
      done(null, chunk);
      return;
    }
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    try {
      this.#drain();
      done();
    } catch (e) {
      done(e as Error);
    }
  }

  #drain(): void {
    for (;;) {
      const b = this.#pending;
      if (this.#state === 'passthrough') {
        if (b.length > 0) this.push(b);
        this.#pending = Buffer.alloc(0);
        return;
      }
      if (this.#state === 'flags') {
        if (b.length < 4) return;
        this.#forward(4);
        this.#state = 'options';
        continue;
      }
      if (b.length >= 4 && b.subarray(0, 4).equals(REQUEST_MAGIC)) {
        this.#passthrough();
        continue;
      }
      if (b.length < 16) return;
      if (b.readBigUInt64BE(0) !== NBD_MAGIC.IHAVEOPT) throw refused('a handshake message that is not an option');
      const option = b.readUInt32BE(8);
      const length = b.readUInt32BE(12);
      if (length > MAX_OPTION_DATA) throw refused(`${optionName(option)} with ${length} bytes of data`);
      if (b.length < 16 + length) return;
      const data = b.subarray(16, 16 + length);
      this.#check(option, data);
      this.#forward(16 + length);
      // EXPORT_NAME has no reply to wait for: transmission follows it directly.
      if (option === NBD_OPT.EXPORT_NAME) this.#passthrough();
    }
  }

  /** From here on every byte passes: 'passthrough' tells a user that may take the guard out of its pipe. */
  #passthrough(): void {
    this.#state = 'passthrough';
    this.emit('passthrough');
  }

  #check(option: number, data: Buffer): void {
    switch (option) {
      case NBD_OPT.ABORT:
      case NBD_OPT.STRUCTURED_REPLY:
        return;
      case NBD_OPT.EXPORT_NAME:
        return this.#name(option, data.toString('utf8'));
      case NBD_OPT.GO:
      case NBD_OPT.INFO:
      case NBD_OPT.SET_META_CONTEXT:
      case NBD_OPT.LIST_META_CONTEXT: {
        if (data.length < 4) throw refused(`${optionName(option)} too short`);
        const n = data.readUInt32BE(0);
        if (data.length < 4 + n) throw refused(`${optionName(option)} with a name longer than its data`);
        return this.#name(option, data.subarray(4, 4 + n).toString('utf8'));
      }
      default:
        throw refused(optionName(option));
    }
  }

  #name(option: number, name: string): void {
    if (name !== this.#exportName) throw refused(`${optionName(option)} for another export (${JSON.stringify(name)})`);
  }

  #forward(n: number): void {
    this.push(this.#pending.subarray(0, n));
    this.#pending = this.#pending.subarray(n);
  }
}

function refused(what: string): NbdError {
  return new NbdError(
    'NBD_NEGOTIATION_FAILED',
    `the cycle's NBD stream refused ${what}: a client may only open its own cycle's export`,
  );
}

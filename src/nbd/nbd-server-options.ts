import {
  NBD_HANDSHAKE_FLAG,
  NBD_CLIENT_FLAG,
  NBD_INFO,
  NBD_MAGIC,
  NBD_OPT,
  NBD_REP,
  NBD_SIZE,
  NbdProtocolViolation,
  optionName,
} from './nbd-protocol.js';
import type { ByteQueue } from './byte-queue.js';

/*
 * The server's half of the fixed newstyle handshake (the NBD spec's "Option haggling"), for
 * nbd-server.ts. Everything here is synchronous: each option is answered from the list of
 * exports as soon as it has arrived whole.
 */

/** What an export says of itself in the handshake. */
export interface NbdExportInfo {
  size: number;
  /** Transmission flags (NBD_TRANSMISSION_FLAG), HAS_FLAGS included. */
  transmissionFlags: number;
  blockSizes: { min: number; preferred: number; max: number };
}

/** Longest option data accepted: a name (at most 4 KiB by the spec) and a few info requests. */
const MAX_OPTION_DATA = 8 * 1024;
/** Options a client may send before it picks an export: a client that loops is cut. */
const MAX_OPTIONS = 64;

export function serverGreeting(): Buffer {
  const b = Buffer.alloc(NBD_SIZE.GREETING);
  b.writeBigUInt64BE(NBD_MAGIC.INIT_PASSWD, 0);
  b.writeBigUInt64BE(NBD_MAGIC.IHAVEOPT, 8);
  b.writeUInt16BE(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE | NBD_HANDSHAKE_FLAG.NO_ZEROES, 16);
  return b;
}

export type OptionsOutcome =
  /** More bytes are needed. */
  | { kind: 'wait' }
  /** The client chose this export: the transmission phase starts with the bytes still queued. */
  | { kind: 'chosen'; name: string }
  /** The client aborted (answered) or sent what ends the handshake: close after writing. */
  | { kind: 'end' };

/**
 * Parses what the client sent so far and writes the answers through `send`. Throws
 * NbdProtocolViolation on anything that leaves no way to answer (the caller drops the link).
 */
export class NbdServerOptions {
  readonly #lookup: (name: string) => NbdExportInfo | undefined;
  readonly #names: () => string[];
  readonly #send: (b: Buffer) => void;
  #flagsRead = false;
  #noZeroes = false;
  #options = 0;

  constructor(deps: {
    lookup: (name: string) => NbdExportInfo | undefined;
    names: () => string[];
    send: (b: Buffer) => void;
  }) {
    this.#lookup = deps.lookup;
    this.#names = deps.names;
    this.#send = deps.send;
  }

  step(input: ByteQueue): OptionsOutcome {
    if (!this.#flagsRead) {
      if (input.length < 4) return { kind: 'wait' };
      const flags = input.take(4).readUInt32BE(0);
      const known = NBD_CLIENT_FLAG.C_FIXED_NEWSTYLE | NBD_CLIENT_FLAG.C_NO_ZEROES;
      if ((flags & ~known) !== 0) throw new NbdProtocolViolation(`unknown client flags 0x${flags.toString(16)}`);
      if ((flags & NBD_CLIENT_FLAG.C_FIXED_NEWSTYLE) === 0)
        throw new NbdProtocolViolation('the client does not speak fixed newstyle');
      this.#noZeroes = (flags & NBD_CLIENT_FLAG.C_NO_ZEROES) !== 0;
      this.#flagsRead = true;
    }
    while (input.length >= NBD_SIZE.OPTION_HEADER) {
      const header = input.peek(NBD_SIZE.OPTION_HEADER);
      if (header.readBigUInt64BE(0) !== NBD_MAGIC.IHAVEOPT) throw new NbdProtocolViolation('bad option magic');
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      if (length > MAX_OPTION_DATA)
        throw new NbdProtocolViolation(`${optionName(option)} with ${length} bytes of data`);
      if (input.length < NBD_SIZE.OPTION_HEADER + length) return { kind: 'wait' };
      input.take(NBD_SIZE.OPTION_HEADER);
      const data = input.take(length);
      if (++this.#options > MAX_OPTIONS) throw new NbdProtocolViolation(`more than ${MAX_OPTIONS} options`);
      const outcome = this.#answer(option, data);
      if (outcome !== null) return outcome;
    }
    return { kind: 'wait' };
  }

  #answer(option: number, data: Buffer): OptionsOutcome | null {
    switch (option) {
      case NBD_OPT.EXPORT_NAME: {
        const name = data.toString('utf8');
        const info = this.#lookup(name);
        // This option has no error reply: the spec has the server close the connection.
        if (info === undefined) throw new NbdProtocolViolation(`NBD_OPT_EXPORT_NAME of unknown export '${name}'`);
        const b = Buffer.alloc(NBD_SIZE.EXPORT_NAME_REPLY + (this.#noZeroes ? 0 : NBD_SIZE.EXPORT_NAME_ZEROES));
        b.writeBigUInt64BE(BigInt(info.size), 0);
        b.writeUInt16BE(info.transmissionFlags, 8);
        this.#send(b);
        return { kind: 'chosen', name };
      }
      case NBD_OPT.ABORT:
        this.#reply(option, NBD_REP.ACK);
        return { kind: 'end' };
      case NBD_OPT.LIST:
        if (data.length !== 0) return this.#error(option, NBD_REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
        for (const name of this.#names()) {
          const n = Buffer.from(name, 'utf8');
          const payload = Buffer.alloc(4 + n.length);
          payload.writeUInt32BE(n.length, 0);
          n.copy(payload, 4);
          this.#reply(option, NBD_REP.SERVER, payload);
        }
        this.#reply(option, NBD_REP.ACK);
        return null;
      case NBD_OPT.INFO:
      case NBD_OPT.GO:
        return this.#infoOrGo(option, data);
      case NBD_OPT.STARTTLS:
        // A local socket of this host: its file mode is the access control, TLS is the site link's.
        return this.#error(option, NBD_REP.ERR_POLICY, 'TLS is not offered on this local socket');
      default:
        // STRUCTURED_REPLY and the meta contexts included: this server answers with simple replies.
        return this.#error(option, NBD_REP.ERR_UNSUP, `${optionName(option)} is not supported`);
    }
  }

  #infoOrGo(option: number, data: Buffer): OptionsOutcome | null {
    if (data.length < 6) return this.#error(option, NBD_REP.ERR_INVALID, 'option data too short');
    const nameLength = data.readUInt32BE(0);
    if (4 + nameLength + 2 > data.length) return this.#error(option, NBD_REP.ERR_INVALID, 'name runs past the data');
    const name = data.subarray(4, 4 + nameLength).toString('utf8');
    const count = data.readUInt16BE(4 + nameLength);
    if (data.length !== 4 + nameLength + 2 + 2 * count)
      return this.#error(option, NBD_REP.ERR_INVALID, 'information requests do not match the length');
    const requests = new Set<number>();
    for (let i = 0; i < count; i++) requests.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
    const info = this.#lookup(name);
    if (info === undefined) return this.#error(option, NBD_REP.ERR_UNKNOWN, `no export named '${name}'`);
    const exp = Buffer.alloc(12);
    exp.writeUInt16BE(NBD_INFO.EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(info.size), 2);
    exp.writeUInt16BE(info.transmissionFlags, 10);
    this.#reply(option, NBD_REP.INFO, exp);
    if (requests.has(NBD_INFO.BLOCK_SIZE)) {
      const bs = Buffer.alloc(14);
      bs.writeUInt16BE(NBD_INFO.BLOCK_SIZE, 0);
      bs.writeUInt32BE(info.blockSizes.min, 2);
      bs.writeUInt32BE(info.blockSizes.preferred, 6);
      bs.writeUInt32BE(info.blockSizes.max, 10);
      this.#reply(option, NBD_REP.INFO, bs);
    }
    this.#reply(option, NBD_REP.ACK);
    return option === NBD_OPT.GO ? { kind: 'chosen', name } : null;
  }

  #error(option: number, type: number, message: string): null {
    this.#reply(option, type, Buffer.from(message, 'utf8'));
    return null;
  }

  #reply(option: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(NBD_SIZE.OPTION_REPLY_HEADER);
    h.writeBigUInt64BE(NBD_MAGIC.OPTION_REPLY, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    this.#send(data.length === 0 ? h : Buffer.concat([h, data]));
  }
}

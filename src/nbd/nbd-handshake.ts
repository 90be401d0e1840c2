import { isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { NbdError, isNbdError } from './nbd-error.js';
import {
  NBD_CLIENT_FLAG,
  NBD_DEFAULT_BLOCK_SIZES,
  NBD_HANDSHAKE_FLAG,
  NBD_INFO,
  NBD_OPT,
  NBD_REP,
  NBD_SIZE,
  NbdProtocolViolation,
  blockSizeViolation,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfo,
  decodeMetaContext,
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeExportRequest,
  encodeMetaContextRequest,
  encodeOption,
  isErrorReply,
  optionName,
  replyName,
} from './nbd-protocol.js';
import { StreamReader } from './stream-reader.js';

export interface NbdTlsOptions {
  /** CA certificate(s) (PEM) the server's certificate must chain to. */
  ca: Buffer | string;
  /** Client certificate and key (PEM), for servers that verify peers. */
  cert?: Buffer | string;
  key?: Buffer | string;
  /** Name the server certificate must carry; default: the host, or 'localhost' for unix sockets. */
  servername?: string;
}

export interface NbdHandshakeOptions {
  exportName: string;
  tls?: NbdTlsOptions;
  metaContexts?: readonly string[];
  /** For messages: the socket path or host:port. */
  label: string;
  /** Default TLS server name when tls.servername is not set. */
  defaultServername: string;
}

export interface NbdNegotiated {
  /** The socket to use from now on (the TLS socket when TLS was started). */
  socket: Socket;
  /** Bytes received after the final reply (none from a correct server). */
  leftover: Buffer;
  size: number;
  transmissionFlags: number;
  blockSizes: { min: number; preferred: number; max: number };
  /** Whether the server sent NBD_INFO_BLOCK_SIZE (otherwise the spec's defaults apply). */
  blockSizesAdvertised: boolean;
  structuredReplies: boolean;
  metaContexts: Map<string, number>;
  tls: boolean;
}

interface FinalReply {
  type: number;
  message: string;
}

const MAX_OPTION_REPLY = 1024 * 1024;

/**
 * Fixed newstyle negotiation, client side: greeting and flags, STARTTLS (when TLS options
 * are given), then STRUCTURED_REPLY, SET_META_CONTEXT and GO with NBD_INFO_BLOCK_SIZE sent
 * together (EXPORT_NAME if the server does not know GO). On failure the session is ended as the
 * spec asks (NBD_OPT_ABORT where a soft disconnect is possible) and the error thrown.
 */
export class NbdHandshake {
  #socket: Socket;
  readonly #reader: StreamReader;
  readonly #o: NbdHandshakeOptions;
  #noZeroes = false;
  #tls = false;
  #tlsStarted = false;
  #repliesSinceTls = 0;

  constructor(socket: Socket, options: NbdHandshakeOptions) {
    this.#socket = socket;
    this.#o = options;
    this.#reader = new StreamReader(options.label);
    this.#reader.attach(socket);
  }

  async run(): Promise<NbdNegotiated> {
    try {
      return await this.#negotiate();
    } catch (caught) {
      const err = this.#tlsCause(caught);
      // a soft disconnect (NBD_OPT_ABORT) where the session is still sound, a hard one otherwise
      const hard =
        !(err instanceof NbdError) ||
        (this.#tlsStarted && (!this.#tls || err.nbdCode === 'NBD_TLS_FAILED')) ||
        ['NBD_PROTOCOL_ERROR', 'NBD_DISCONNECTED', 'NBD_TIMEOUT'].includes(err.nbdCode);
      if (!hard) await this.#softDisconnect();
      this.#reader.detach();
      this.#socket.destroy();
      if (err instanceof NbdProtocolViolation) throw this.#violation(err.message);
      throw err;
    }
  }

  async #negotiate(): Promise<NbdNegotiated> {
    const greeting = decodeGreeting(await this.#reader.read(NBD_SIZE.GREETING));
    if (greeting.style === 'oldstyle')
      throw this.#violation('server speaks oldstyle negotiation, which is not supported');
    if ((greeting.handshakeFlags & NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE) === 0) {
      throw this.#violation('server does not offer fixed newstyle negotiation');
    }
    this.#noZeroes = (greeting.handshakeFlags & NBD_HANDSHAKE_FLAG.NO_ZEROES) !== 0;
    this.#socket.write(
      encodeClientFlags(NBD_CLIENT_FLAG.C_FIXED_NEWSTYLE | (this.#noZeroes ? NBD_CLIENT_FLAG.C_NO_ZEROES : 0)),
    );

    if (this.#o.tls !== undefined) await this.#startTls(this.#o.tls);
    // The options after TLS go out at once and their replies are read in order (the server
    // answers each in turn): one round trip instead of three, which over a WAN is most of a
    // small cycle's handshake. Nothing is lost when one fails: each reply is still checked,
    // and an answer to a later option that depended on it (meta contexts without structured
    // replies) is read and dropped with the error the sequential order would have given.
    const wanted = this.#o.metaContexts ?? [];
    this.#socket.write(
      Buffer.concat([
        encodeOption(NBD_OPT.STRUCTURED_REPLY),
        ...(wanted.length > 0 ? [encodeOption(NBD_OPT.SET_META_CONTEXT, this.#metaContextRequest(wanted))] : []),
        encodeOption(NBD_OPT.GO, this.#goRequest()),
      ]),
    );
    const structuredReplies = await this.#structuredReplies();
    const metaContexts = await this.#setMetaContexts(structuredReplies);
    const go = await this.#go();
    const leftover = this.#reader.detach();
    return { socket: this.#socket, leftover, ...go, structuredReplies, metaContexts, tls: this.#tls };
  }

  async #startTls(tls: NbdTlsOptions): Promise<void> {
    const final = await this.#option(NBD_OPT.STARTTLS, undefined, () => false);
    if (final.type !== NBD_REP.ACK) {
      throw new NbdError(
        'NBD_TLS_FAILED',
        `${this.#o.label} does not offer TLS (${replyName(final.type)}${final.message ? `: ${final.message}` : ''}); ` +
          'refusing to continue in plain text. Configure TLS on the server or connect without TLS options.',
        { details: { option: 'NBD_OPT_STARTTLS', replyType: replyName(final.type), serverMessage: final.message } },
      );
    }
    const plain = this.#socket;
    this.#tlsStarted = true;
    const rest = this.#reader.detach();
    if (rest.length > 0) throw this.#violation('server sent data after acknowledging NBD_OPT_STARTTLS');
    const secure = await new Promise<TLSSocket>((resolve, reject) => {
      const name = tls.servername ?? this.#o.defaultServername;
      const s = tlsConnect({
        // SNI may not carry an IP address (RFC 6066): an IP is only checked against the certificate
        socket: plain,
        ca: tls.ca,
        ...(isIP(name) === 0 ? { servername: name } : { host: name }),
        rejectUnauthorized: true,
        ...(tls.cert === undefined ? {} : { cert: tls.cert }),
        ...(tls.key === undefined ? {} : { key: tls.key }),
      });
      const onError = (err: Error & { code?: string }): void => {
        s.destroy();
        reject(
          new NbdError(
            'NBD_TLS_FAILED',
            `TLS with ${this.#o.label} failed: ${err.message}. ` +
              'Check that the server certificate is signed by the given CA and names the server, and that the client certificate is accepted.',
            { cause: err, details: { tlsError: err.code ?? null } },
          ),
        );
      };
      // A socket destroyed under the handshake (a connect timeout, a cut link) closes without
      // an error: without this the handshake would wait forever.
      const onClose = (): void =>
        onError(Object.assign(new Error('the connection closed during the TLS handshake'), { code: 'ECONNRESET' }));
      s.once('error', onError);
      s.once('close', onClose);
      plain.once('close', onClose);
      s.once('secureConnect', () => {
        s.off('error', onError);
        s.off('close', onClose);
        plain.off('close', onClose);
        resolve(s);
      });
    });
    this.#socket = secure;
    this.#tls = true;
    this.#reader.attach(secure);
  }

  async #structuredReplies(): Promise<boolean> {
    const final = await this.#replies(NBD_OPT.STRUCTURED_REPLY, () => false);
    if (final.type === NBD_REP.ACK) return true;
    if (final.type === NBD_REP.ERR_UNSUP) return false;
    throw this.#refused(NBD_OPT.STRUCTURED_REPLY, final);
  }

  async #setMetaContexts(structured: boolean): Promise<Map<string, number>> {
    const wanted = this.#o.metaContexts ?? [];
    const granted = new Map<string, number>();
    if (wanted.length === 0) return granted;
    if (!structured) {
      await this.#replies(NBD_OPT.SET_META_CONTEXT, () => true);
      throw new NbdError(
        'NBD_UNSUPPORTED',
        `${this.#o.label} has no structured replies, so meta contexts (${wanted.join(', ')}) cannot be used`,
        { details: { metaContexts: wanted } },
      );
    }
    const final = await this.#replies(NBD_OPT.SET_META_CONTEXT, (type, payload) => {
      if (type !== NBD_REP.META_CONTEXT) return false;
      const { id, name } = decodeMetaContext(payload);
      granted.set(name, id);
      return true;
    });
    if (final.type !== NBD_REP.ACK) throw this.#refused(NBD_OPT.SET_META_CONTEXT, final);
    const missing = wanted.filter((name) => !granted.has(name));
    if (missing.length > 0) {
      throw new NbdError(
        'NBD_NEGOTIATION_FAILED',
        `export '${this.#o.exportName}' on ${this.#o.label} does not offer meta context ${missing.join(', ')}` +
          ` (offered: ${[...granted.keys()].join(', ') || 'none'}). For a dirty bitmap, export it by name (qemu-nbd -B NAME, or bitmaps in block-export-add).`,
        { details: { missing, granted: Object.fromEntries(granted) } },
      );
    }
    return granted;
  }

  async #go(): Promise<Pick<NbdNegotiated, 'size' | 'transmissionFlags' | 'blockSizes' | 'blockSizesAdvertised'>> {
    let exportInfo: { size: number; transmissionFlags: number } | undefined;
    let blockSizes: { min: number; preferred: number; max: number } | undefined;
    const final = await this.#replies(NBD_OPT.GO, (type, payload) => {
      if (type !== NBD_REP.INFO) return false;
      const info = decodeInfo(payload);
      if (info.type === 'export') exportInfo = { size: info.size, transmissionFlags: info.transmissionFlags };
      else if (info.type === 'block-size') blockSizes = { min: info.min, preferred: info.preferred, max: info.max };
      return true; // other information types are ignored, as the spec asks
    });
    if (final.type === NBD_REP.ERR_UNSUP) return this.#exportName();
    if (final.type !== NBD_REP.ACK) throw this.#refused(NBD_OPT.GO, final);
    if (exportInfo === undefined) throw this.#violation('NBD_OPT_GO succeeded without NBD_INFO_EXPORT');
    if (blockSizes !== undefined) {
      const bad = blockSizeViolation(blockSizes);
      if (bad !== null) throw this.#violation(`invalid NBD_INFO_BLOCK_SIZE: ${bad}`);
    }
    return {
      ...exportInfo,
      blockSizes: blockSizes ?? { ...NBD_DEFAULT_BLOCK_SIZES },
      blockSizesAdvertised: blockSizes !== undefined,
    };
  }

  /** Fallback for servers without NBD_OPT_GO: no error replies, no block sizes. */
  async #exportName(): Promise<
    Pick<NbdNegotiated, 'size' | 'transmissionFlags' | 'blockSizes' | 'blockSizesAdvertised'>
  > {
    this.#socket.write(encodeOption(NBD_OPT.EXPORT_NAME, Buffer.from(this.#o.exportName, 'utf8')));
    const reply = decodeExportNameReply(await this.#reader.read(NBD_SIZE.EXPORT_NAME_REPLY));
    if (!this.#noZeroes) await this.#reader.read(NBD_SIZE.EXPORT_NAME_ZEROES);
    return { ...reply, blockSizes: { ...NBD_DEFAULT_BLOCK_SIZES }, blockSizesAdvertised: false };
  }

  #metaContextRequest(wanted: readonly string[]): Buffer {
    return encodeMetaContextRequest(this.#o.exportName, [...wanted]);
  }

  #goRequest(): Buffer {
    return encodeExportRequest(this.#o.exportName, [NBD_INFO.BLOCK_SIZE]);
  }

  /** Sends one option and reads its replies (see #replies). */
  async #option(
    option: number,
    data: Buffer | undefined,
    onReply: (type: number, payload: Buffer) => boolean,
  ): Promise<FinalReply> {
    this.#socket.write(encodeOption(option, data));
    return this.#replies(option, onReply);
  }

  /**
   * Reads the replies to an option already sent, until the final one (ACK or an error).
   * `onReply` takes the intermediate replies it expects and returns false for others.
   */
  async #replies(option: number, onReply: (type: number, payload: Buffer) => boolean): Promise<FinalReply> {
    for (;;) {
      const header = decodeOptionReplyHeader(await this.#reader.read(NBD_SIZE.OPTION_REPLY_HEADER));
      if (this.#tls) this.#repliesSinceTls += 1;
      if (header.option !== option) {
        throw this.#violation(`reply to ${optionName(header.option)} while waiting for ${optionName(option)}`);
      }
      if (header.length > MAX_OPTION_REPLY) throw this.#violation(`option reply of ${header.length} bytes`);
      const payload = header.length > 0 ? await this.#reader.read(header.length) : Buffer.alloc(0);
      if (header.type === NBD_REP.ACK) {
        if (payload.length !== 0) throw this.#violation('NBD_REP_ACK with data');
        return { type: header.type, message: '' };
      }
      if (isErrorReply(header.type)) {
        const final = { type: header.type, message: payload.toString('utf8') };
        if (header.type === NBD_REP.ERR_TLS_REQD) throw this.#tlsRequired(option, final);
        return final;
      }
      if (!onReply(header.type, payload))
        throw this.#violation(`unexpected ${replyName(header.type)} in reply to ${optionName(option)}`);
    }
  }

  /** NBD_OPT_ABORT, then wait briefly for the ACK or the close. */
  async #softDisconnect(): Promise<void> {
    if (this.#socket.destroyed) return;
    try {
      this.#socket.write(encodeOption(NBD_OPT.ABORT));
      await Promise.race([this.#abortAcked(), new Promise((r) => setTimeout(r, 1000).unref())]);
    } catch {
      // the server may close without answering; either way we are done
    }
    if (this.#tls && !this.#socket.destroyed) {
      await new Promise<void>((r) => {
        setTimeout(r, 1000).unref();
        this.#socket.end(r);
      });
    }
  }

  /** Reads past the replies to options still in flight (pipelined) up to the ABORT's own. */
  async #abortAcked(): Promise<void> {
    for (;;) {
      const header = decodeOptionReplyHeader(await this.#reader.read(NBD_SIZE.OPTION_REPLY_HEADER));
      if (header.option === NBD_OPT.ABORT || header.length > MAX_OPTION_REPLY) return;
      if (header.length > 0) await this.#reader.read(header.length);
    }
  }

  /**
   * With TLS 1.3 the client finishes its handshake before the server has checked the
   * client certificate; a refusal then shows up as an alert or a reset on the first read.
   */
  #tlsCause(err: unknown): unknown {
    if (!this.#tls || this.#repliesSinceTls > 0 || !isNbdError(err, 'NBD_DISCONNECTED')) return err;
    const cause = err.cause as { code?: unknown } | undefined;
    return new NbdError(
      'NBD_TLS_FAILED',
      `${this.#o.label} dropped the connection right after the TLS handshake (${err.message}). ` +
        'It probably refused the client certificate: give one signed by a CA the server trusts.',
      { cause: err, details: { tlsError: typeof cause?.code === 'string' ? cause.code : null } },
    );
  }

  #refused(option: number, final: FinalReply): NbdError {
    return new NbdError(
      'NBD_NEGOTIATION_FAILED',
      `${this.#o.label} refused ${optionName(option)} for export '${this.#o.exportName}': ${replyName(final.type)}` +
        `${final.message ? ` (${final.message})` : ''}`,
      {
        details: {
          option: optionName(option),
          replyType: replyName(final.type),
          serverMessage: final.message,
          exportName: this.#o.exportName,
        },
      },
    );
  }

  #tlsRequired(option: number, final: FinalReply): NbdError {
    return new NbdError(
      'NBD_TLS_REQUIRED',
      `${this.#o.label} requires TLS (${replyName(final.type)} to ${optionName(option)}${final.message ? `: ${final.message}` : ''}); ` +
        'connect with TLS options (CA certificate, and a client certificate if the server verifies peers).',
      {
        details: {
          option: optionName(option),
          replyType: replyName(final.type),
          serverMessage: final.message,
          exportName: this.#o.exportName,
        },
      },
    );
  }

  #violation(message: string): NbdError {
    return new NbdError(
      'NBD_PROTOCOL_ERROR',
      `NBD protocol error from ${this.#o.label} during negotiation: ${message}`,
      { details: { phase: 'handshake' } },
    );
  }
}

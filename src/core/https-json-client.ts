import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type Agent, type RequestOptions } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { ERROR_CODES, type ErrorCode } from './error-codes.js';

/**
 * The one JSON client over HTTPS: the CLI calls its site with it (cli/api-client.ts), a site
 * calls its peers (sites/peer-client.ts) and P2V agents (convert/p2v-agent-client.ts). It
 * answers a status and a parsed body, or a TransportError saying why there was no answer;
 * each caller words those in its own terms (SITE_UNREACHABLE, PEER_UNREACHABLE, ...), and
 * reads an error body with readErrorBody.
 */

/** Why a request to another site got no HTTP answer. */
export type TransportFailure = 'timeout' | 'cert-untrusted' | 'cert-time' | 'network';

export class TransportError extends Error {
  readonly failure: TransportFailure;
  /** The Node/OpenSSL error code, e.g. ECONNREFUSED or UNABLE_TO_VERIFY_LEAF_SIGNATURE. */
  readonly sysCode: string | undefined;
  /** Node's own message for a socket or TLS error (the message above is ours, worded for a pinned CA). */
  readonly systemMessage: string | undefined;
  constructor(failure: TransportFailure, message: string, sysCode?: string, systemMessage?: string) {
    super(message);
    this.systemMessage = systemMessage;
    this.name = 'TransportError';
    this.failure = failure;
    this.sysCode = sysCode;
  }
}

/** Verification failures that mean "not signed by the CA we trust" (OpenSSL's names, as Node reports them). */
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'CERT_CHAIN_TOO_LONG',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const OUT_OF_TIME = new Set([
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
]);

/**
 * Whom to believe about the server's certificate.
 * - `ca`: exactly this CA (never the system store). The host name is not checked: the CA is
 *   one site's private CA and signs only that site's certificates, so an operator may reach
 *   the site by a name or NAT address its certificate does not list. Peers and P2V agents.
 * - `ca` with `checkHostName`: this CA, and the certificate must name the host (the CLI
 *   given MAMORI_CA or a site's folder, as it always did).
 * - `system`: the system's CAs and the host name, as any HTTPS client (the CLI without a CA).
 * - `insecure`: no verification; only for fetching a CA that is then checked another way.
 * An http: URL (a site started with --insecure-http) has nothing to verify; only the CLI
 * calls one (peer URLs are refused before: sites/peer-client.ts, peerUrl).
 */
export type ServerTrust = { ca: string; checkHostName?: boolean } | { system: true } | { insecure: true };

export interface HttpsJsonRequest {
  url: URL;
  method: string;
  body?: unknown;
  headers?: Record<string, string>;
  /** Sent as `authorization: Bearer TOKEN`. */
  token?: string;
  trust: ServerTrust;
  /** One deadline for the whole exchange, from the request to the end of the answer. */
  timeoutMs: number;
  /** The most response bytes read before the answer is refused (default MAX_RESPONSE_BYTES; Infinity for none). */
  maxBytes?: number;
  /**
   * Keep-alive on Node's global agent (the CLI: a job followed by polling reuses its
   * connection). Default: a fresh connection each time (see httpsJson).
   */
  reuseConnection?: boolean;
  /**
   * Keep-alive on this agent instead (a site calling its peer: sites/peer-connections.ts).
   * Wins over reuseConnection.
   */
  agent?: Agent;
  /**
   * Ask to switch the connection to this protocol (`Upgrade`): a 101 answer resolves with the
   * connection itself in `socket`, TLS and all; any other answer is read as usual.
   */
  upgrade?: string;
}

/**
 * A peer's answer is read whole into memory: without a bound, a compromised or broken peer
 * could make this site allocate without limit. The largest real answers (a protection
 * inventory, a run journal) are well under a megabyte.
 */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

export interface HttpsJsonResponse {
  status: number;
  json: unknown;
  /** Local wall time (ms) when the request went out on the established TLS session. */
  sentAt: number;
  /** From the request going out on the established session to the response headers. */
  rttMs: number;
  /** The server's leaf certificate (DER), as presented on this connection. */
  peerCertificate: Buffer | null;
  /** After a 101 to `upgrade`: the connection, now the caller's. */
  socket?: Socket;
}

/**
 * One JSON request over HTTPS with node:https (not fetch: undici costs a CLI call ~150 ms to
 * load), and one deadline for the whole exchange. A fresh connection each time unless the
 * caller pools (reuseConnection, agent): a pooled socket can outlive a certificate change or
 * a cut link, so pooling is for callers whose pool is keyed by the trust it checked and whose
 * deadline covers a dead socket (the request fails as a fresh one would).
 */
export function httpsJson(r: HttpsJsonRequest): Promise<HttpsJsonResponse> {
  const payload = r.body === undefined ? undefined : JSON.stringify(r.body);
  const https = r.url.protocol === 'https:';
  const options: RequestOptions = {
    method: r.method,
    ...(r.agent !== undefined ? { agent: r.agent } : r.reuseConnection === true ? {} : { agent: false }),
    headers: {
      accept: 'application/json',
      // The big lists come compressed when asked (api/list-reply.ts): 700 KB for 1,000 VMs is ~60 KB.
      'accept-encoding': 'br, gzip',
      ...(r.token === undefined ? {} : { authorization: `Bearer ${r.token}` }),
      ...(payload === undefined
        ? {}
        : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }),
      ...r.headers,
    },
    ...(https ? trustOptions(r.trust) : {}),
  };
  const request = https ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    let sentAt = Date.now();
    let t0 = performance.now();
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const fail = (e: TransportError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(e);
    };
    if (r.upgrade !== undefined) Object.assign(options.headers ?? {}, { connection: 'Upgrade', upgrade: r.upgrade });
    const req = request(r.url, options, (res) => {
      const rttMs = performance.now() - t0;
      const peerCertificate = (res.socket as TLSSocket).getPeerCertificate?.()?.raw ?? null;
      const maxBytes = r.maxBytes ?? MAX_RESPONSE_BYTES;
      const declared = Number(res.headers['content-length'] ?? 0);
      if (declared > maxBytes)
        return fail(
          new TransportError('network', `answered ${declared} bytes, more than the ${maxBytes} a peer answer may have`),
        );
      const chunks: Buffer[] = [];
      let bytes = 0;
      res
        .on('data', (c: Buffer) => {
          bytes += c.length;
          if (bytes > maxBytes)
            return fail(
              new TransportError('network', `answered more than the ${maxBytes} bytes a peer answer may have`),
            );
          chunks.push(c);
        })
        .on('error', (e) => fail(classify(e)));
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const encoding = res.headers['content-encoding'];
        let body: Buffer;
        try {
          body = decoded(Buffer.concat(chunks), encoding, maxBytes);
        } catch (e) {
          reject(
            new TransportError(
              'network',
              `answered a ${encoding} body that does not decode into at most ${maxBytes} bytes (${(e as Error).message})`,
            ),
          );
          return;
        }
        let json: unknown;
        try {
          const text = body.toString('utf8');
          json = text ? JSON.parse(text) : undefined;
        } catch {
          reject(
            new TransportError(
              'network',
              `answered HTTP ${res.statusCode} with something that is not JSON (is this the mamori API?)`,
            ),
          );
          return;
        }
        resolve({ status: res.statusCode ?? 0, json, sentAt, rttMs, peerCertificate });
      });
    });
    // The round trip counts from the TLS handshake's end on a new connection, and from now on a
    // kept-alive one: a listener added to a reused socket would never fire and would pile up.
    req.on('socket', (s) => {
      if (!s.connecting) return;
      s.once('secureConnect', () => {
        sentAt = Date.now();
        t0 = performance.now();
      });
    });
    req.on('error', (e) => fail(classify(e)));
    req.on('upgrade', (res, socket: Socket, head: Buffer) => {
      if (settled) return void socket.destroy();
      settled = true;
      clearTimeout(timer);
      if (head.length > 0) socket.unshift(head);
      // Now the caller's: a pooled connection still carries its agent's idle timeout.
      socket.setTimeout(0);
      const peerCertificate = (socket as TLSSocket).getPeerCertificate?.()?.raw ?? null;
      resolve({
        status: res.statusCode ?? 101,
        json: undefined,
        sentAt,
        rttMs: performance.now() - t0,
        peerCertificate,
        socket,
      });
    });
    timer = setTimeout(() => fail(new TransportError('timeout', `no answer within ${r.timeoutMs} ms`)), r.timeoutMs);
    req.end(payload);
  });
}

/**
 * The body as sent before its content-encoding. maxOutputLength bounds what a small compressed
 * answer may grow to, as maxBytes bounds the bytes read: a throw here is answered as "not JSON".
 */
function decoded(body: Buffer, encoding: string | undefined, maxBytes: number): Buffer {
  const limit = Number.isFinite(maxBytes) ? { maxOutputLength: maxBytes } : {};
  if (encoding === undefined || encoding === 'identity') return body;
  if (encoding === 'br') return brotliDecompressSync(body, limit);
  if (encoding === 'gzip') return gunzipSync(body, limit);
  throw new Error(`unknown content-encoding ${encoding}`);
}

function trustOptions(t: ServerTrust): RequestOptions {
  if ('insecure' in t) return { rejectUnauthorized: false };
  if ('system' in t) return { rejectUnauthorized: true };
  return {
    ca: t.ca,
    rejectUnauthorized: true,
    ...(t.checkHostName === true ? {} : { checkServerIdentity: () => undefined }),
  };
}

function classify(e: Error & { code?: string }): TransportError {
  const code = e.code;
  if (code && UNTRUSTED.has(code))
    return new TransportError(
      'cert-untrusted',
      `its certificate is not signed by the pinned CA (${code})`,
      code,
      e.message,
    );
  if (code && OUT_OF_TIME.has(code))
    return new TransportError(
      'cert-time',
      `its certificate is outside its validity period (${code}): are the two clocks far apart?`,
      code,
      e.message,
    );
  return new TransportError('network', e.message || code || 'connection failed', code, e.message);
}

/** A mamori error answer, `{ error: { code, message, details } }`, as a server sent it. */
export interface ErrorBody {
  /** The server's code; knownErrorCode says whether this build knows it. */
  code: string | undefined;
  message: string | undefined;
  details: Record<string, unknown> | undefined;
}

/** The error a mamori server put in its answer, or null when the body is not one. */
export function readErrorBody(json: unknown): ErrorBody | null {
  const err = (json as { error?: unknown } | null | undefined)?.error;
  if (typeof err !== 'object' || err === null) return null;
  const e = err as { code?: unknown; message?: unknown; details?: unknown };
  return {
    code: typeof e.code === 'string' ? e.code : undefined,
    message: typeof e.message === 'string' ? e.message : undefined,
    details: typeof e.details === 'object' && e.details !== null ? (e.details as Record<string, unknown>) : undefined,
  };
}

/** The server's code when this build has it in its registry, else INTERNAL (a newer server's code). */
export function knownErrorCode(code: string | undefined): ErrorCode {
  return (code !== undefined && code in ERROR_CODES ? code : 'INTERNAL') as ErrorCode;
}

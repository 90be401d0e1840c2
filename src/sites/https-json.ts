import { request, type RequestOptions } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { performance } from 'node:perf_hooks';

/** Why a request to another site got no HTTP answer. */
export type TransportFailure = 'timeout' | 'cert-untrusted' | 'cert-time' | 'network';

export class TransportError extends Error {
  readonly failure: TransportFailure;
  /** The Node/OpenSSL error code, e.g. ECONNREFUSED or UNABLE_TO_VERIFY_LEAF_SIGNATURE. */
  readonly sysCode: string | undefined;
  constructor(failure: TransportFailure, message: string, sysCode?: string) {
    super(message);
    this.name = 'TransportError';
    this.failure = failure;
    this.sysCode = sysCode;
  }
}

/** Verification failures that mean "not signed by the CA we trust" (OpenSSL's names, as Node reports them). */
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED',
  'CERT_REJECTED', 'INVALID_CA', 'INVALID_PURPOSE', 'PATH_LENGTH_EXCEEDED', 'CERT_CHAIN_TOO_LONG',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const OUT_OF_TIME = new Set(['CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD']);

export interface HttpsJsonRequest {
  url: URL;
  method: string;
  body?: unknown;
  headers?: Record<string, string>;
  /**
   * `ca`: verify the server against exactly this CA (never the system store). The host name
   * is not checked: the CA is one site's private CA and signs only that site's certificates,
   * so an operator may reach the site by a name or NAT address its certificate does not list.
   * `insecure`: no verification; only for fetching a CA that is then checked another way.
   */
  trust: { ca: string } | { insecure: true };
  timeoutMs: number;
  /** The most response bytes read before the answer is refused (default MAX_RESPONSE_BYTES). */
  maxBytes?: number;
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
}

/**
 * One JSON request over HTTPS with node:https (not fetch: undici costs a CLI call ~150 ms to
 * load), a fresh connection each time (no keep-alive: a pooled socket would outlive a
 * certificate change or a cut link), and one deadline for the whole exchange.
 */
export function httpsJson(r: HttpsJsonRequest): Promise<HttpsJsonResponse> {
  const payload = r.body === undefined ? undefined : JSON.stringify(r.body);
  const options: RequestOptions = {
    method: r.method,
    agent: false,
    headers: {
      accept: 'application/json',
      ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }),
      ...r.headers,
    },
    ...('ca' in r.trust ? { ca: r.trust.ca, rejectUnauthorized: true, checkServerIdentity: () => undefined } : { rejectUnauthorized: false }),
  };
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
    const req = request(r.url, options, (res) => {
      const rttMs = performance.now() - t0;
      const peerCertificate = (res.socket as TLSSocket).getPeerCertificate?.()?.raw ?? null;
      const maxBytes = r.maxBytes ?? MAX_RESPONSE_BYTES;
      const declared = Number(res.headers['content-length'] ?? 0);
      if (declared > maxBytes) return fail(new TransportError('network', `answered ${declared} bytes, more than the ${maxBytes} a peer answer may have`));
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (bytes > maxBytes) return fail(new TransportError('network', `answered more than the ${maxBytes} bytes a peer answer may have`));
        chunks.push(c);
      }).on('error', (e) => fail(classify(e)));
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          reject(new TransportError('network', `answered HTTP ${res.statusCode} with something that is not JSON (is this the mamori API?)`));
          return;
        }
        resolve({ status: res.statusCode ?? 0, json, sentAt, rttMs, peerCertificate });
      });
    });
    req.on('socket', (s) => s.once('secureConnect', () => {
      sentAt = Date.now();
      t0 = performance.now();
    }));
    req.on('error', (e) => fail(classify(e)));
    timer = setTimeout(() => fail(new TransportError('timeout', `no answer within ${r.timeoutMs} ms`)), r.timeoutMs);
    req.end(payload);
  });
}

function classify(e: Error & { code?: string }): TransportError {
  const code = e.code;
  if (code && UNTRUSTED.has(code)) return new TransportError('cert-untrusted', `its certificate is not signed by the pinned CA (${code})`, code);
  if (code && OUT_OF_TIME.has(code)) return new TransportError('cert-time', `its certificate is outside its validity period (${code}): are the two clocks far apart?`, code);
  return new TransportError('network', e.message || code || 'connection failed', code);
}

import type { Socket } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { MamoriError } from '../core/mamori-error.js';
import { certFingerprint, parseCert } from './cert-fingerprint.js';
import { PEER_AGENT } from './peer-connections.js';
import {
  httpsJson,
  knownErrorCode,
  readErrorBody,
  TransportError,
  type HttpsJsonResponse,
} from '../core/https-json-client.js';

/** What it takes to call a paired site: where, which CA to pin, and the token it gave us. */
export interface PeerTarget {
  name: string;
  url: string;
  caCertPem: string;
  caFingerprint: string;
  token: string | null;
}

export interface PeerHealth {
  site: string;
  /** Round trip of the HTTP exchange on an established TLS session, ms. */
  rttMs: number;
  /** Peer clock minus local clock, ms, NTP-style: the peer's time against the midpoint of the exchange. */
  clockOffsetMs: number;
}

/** What GET /site/ca answers: a site's name and CA, public by design (certificates are not secrets). */
export interface SiteIdentity {
  name: string;
  caCertPem: string;
  fingerprint: string;
  time: number;
}

export const DEFAULT_PEER_TIMEOUT_MS = 10_000;
export const HEALTH_TIMEOUT_MS = 2_000;

/**
 * The typed client of a paired site's API. Every call pins the peer's CA (never the system
 * store), carries the site-to-site token, and has a deadline. Failures are MamoriErrors:
 * PEER_UNREACHABLE (retryable: timeout, refused, cut link), PEER_CERT_MISMATCH (the peer's
 * certificate is not from the pinned CA), PEER_AUTH_FAILED (the peer refused our token),
 * or the peer's own error code with its message prefixed by the peer's name.
 */
export class PeerClient {
  readonly name: string;
  readonly url: string;
  #target: PeerTarget;
  #timeoutMs: number;

  constructor(target: PeerTarget, opts: { timeoutMs?: number } = {}) {
    this.#target = target;
    this.name = target.name;
    this.url = target.url;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_PEER_TIMEOUT_MS;
  }

  get<T>(path: string, opts?: { timeoutMs?: number }): Promise<T> {
    return this.request<T>('GET', path, undefined, opts);
  }
  post<T>(path: string, body?: unknown, opts?: { timeoutMs?: number }): Promise<T> {
    return this.request<T>('POST', path, body ?? {}, opts);
  }
  delete<T>(path: string, opts?: { timeoutMs?: number }): Promise<T> {
    return this.request<T>('DELETE', path, undefined, opts);
  }

  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; auth?: boolean } = {},
  ): Promise<T> {
    const res = await this.#send(method, path, body, opts);
    return res.json as T;
  }

  /**
   * A byte stream to the peer over its API's TLS: GET `path` asking to upgrade to `protocol`
   * (a cycle's NBD stream). Same pinned CA, token and error mapping as a request.
   */
  async openStream(path: string, protocol: string, opts: { timeoutMs?: number } = {}): Promise<Socket> {
    const res = await this.#send('GET', path, undefined, { ...opts, upgrade: protocol });
    if (res.socket === undefined)
      throw new MamoriError('PEER_UNREACHABLE', `${this.#target.name} did not switch ${path} to ${protocol}`, {
        details: { peer: this.name, status: res.status },
      });
    return res.socket;
  }

  /** GET /health with a short deadline: reachability, round trip and clock offset. */
  async health(timeoutMs = HEALTH_TIMEOUT_MS): Promise<PeerHealth> {
    const res = await this.#send('GET', '/health', undefined, { timeoutMs, auth: false });
    const body = res.json as { site?: unknown; time?: unknown } | undefined;
    if (typeof body?.time !== 'number' || typeof body.site !== 'string') {
      throw new MamoriError('PEER_UNREACHABLE', `${this.#target.url}/health did not answer like a mamori site`, {
        details: { peer: this.name },
      });
    }
    return { site: body.site, rttMs: round(res.rttMs), clockOffsetMs: round(body.time - (res.sentAt + res.rttMs / 2)) };
  }

  async #send(
    method: string,
    path: string,
    body: unknown,
    opts: { timeoutMs?: number; auth?: boolean; upgrade?: string },
  ): Promise<HttpsJsonResponse> {
    const t = this.#target;
    const auth = opts.auth ?? true;
    if (auth && !t.token) {
      throw new MamoriError(
        'PEER_AUTH_FAILED',
        `this site has no token to call ${t.name}: run 'mamori site pair ${t.url} --token ADMIN_TOKEN_OF_${t.name}' here`,
        { details: { peer: t.name } },
      );
    }
    let res: HttpsJsonResponse;
    try {
      res = await httpsJson({
        url: peerUrl(t.url, path),
        method,
        body,
        trust: { ca: t.caCertPem },
        timeoutMs: opts.timeoutMs ?? this.#timeoutMs,
        ...(auth && t.token ? { token: t.token } : {}),
        ...(opts.upgrade === undefined ? {} : { upgrade: opts.upgrade }),
        // The health check opens its own connection: it proves a new one works (the watch's job).
        ...(auth ? { agent: PEER_AGENT } : {}),
      });
    } catch (e) {
      throw await this.#transportError(e);
    }
    if ((res.status >= 200 && res.status < 300) || res.socket !== undefined) return res;
    throw peerAnswerError(t.name, res);
  }

  async #transportError(e: unknown): Promise<MamoriError> {
    const t = this.#target;
    if (!(e instanceof TransportError))
      return new MamoriError('PEER_UNREACHABLE', `cannot reach ${t.name} at ${t.url}: ${String(e)}`, {
        details: { peer: t.name },
      });
    if (e.failure !== 'cert-untrusted') {
      return new MamoriError('PEER_UNREACHABLE', `cannot reach ${t.name} at ${t.url}: ${e.message}`, {
        details: { peer: t.name, url: t.url, cause: e.sysCode ?? e.failure },
      });
    }
    // Say which CA it presents now, when it tells us (best effort, a short look without trust).
    const now = await fetchSiteIdentity(t.url, 2_000).catch(() => undefined);
    return new MamoriError(
      'PEER_CERT_MISMATCH',
      `${t.name} at ${t.url} presented a certificate that is not signed by the CA pinned at pairing (SHA256 ${t.caFingerprint})` +
        `${now ? `; it now presents CA ${now.fingerprint} (site ${JSON.stringify(now.name)})` : ''}. ` +
        `If that site was reinstalled, compare with 'mamori site ca' there, then 'mamori site unpair ${t.name}' and pair again; otherwise something between the sites intercepts TLS.`,
      {
        details: {
          peer: t.name,
          url: t.url,
          expectedFingerprint: t.caFingerprint,
          presentedFingerprint: now?.fingerprint ?? null,
        },
      },
    );
  }
}

/**
 * Fetches a site's name and CA *without* verifying the connection (there is nothing to verify
 * against yet), and checks that the server certificate of that same connection is signed by
 * the CA it returned. What the CA is worth is settled by the caller: pairing-proof.ts.
 */
export async function fetchSiteIdentity(url: string, timeoutMs = DEFAULT_PEER_TIMEOUT_MS): Promise<SiteIdentity> {
  let res: HttpsJsonResponse;
  try {
    res = await httpsJson({ url: peerUrl(url, '/site/ca'), method: 'GET', trust: { insecure: true }, timeoutMs });
  } catch (e) {
    throw new MamoriError('PEER_UNREACHABLE', `cannot reach the site at ${url}: ${(e as Error).message}`, {
      details: { url, cause: (e as TransportError).sysCode ?? null },
    });
  }
  if (res.status !== 200) throw peerAnswerError(url, res);
  const body = res.json as Partial<SiteIdentity> | undefined;
  if (typeof body?.caCertPem !== 'string' || typeof body.name !== 'string') {
    throw new MamoriError('PEER_UNREACHABLE', `${url}/site/ca did not answer like a mamori site`, { details: { url } });
  }
  const ca = parseCert(body.caCertPem, `CA certificate from ${url}`);
  const leaf = res.peerCertificate ? new X509Certificate(res.peerCertificate) : undefined;
  if (!ca.ca || !ca.verify(ca.publicKey) || !leaf || !leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) {
    throw new MamoriError(
      'PEER_CERT_MISMATCH',
      `the site at ${url} serves a TLS certificate that is not signed by the CA it publishes at /site/ca; something between the sites may intercept TLS`,
      { details: { url } },
    );
  }
  return {
    name: body.name,
    caCertPem: body.caCertPem,
    fingerprint: certFingerprint(ca),
    time: typeof body.time === 'number' ? body.time : NaN,
  };
}

/** The peer's error answer as a MamoriError: its own code, or PEER_AUTH_FAILED for a refused token. */
function peerAnswerError(peer: string, res: HttpsJsonResponse): MamoriError {
  const err = readErrorBody(res.json);
  if (!err?.code)
    return new MamoriError(
      'PEER_UNREACHABLE',
      `${peer} answered HTTP ${res.status} without a mamori error (is the URL the site's API?)`,
      { details: { peer, status: res.status } },
    );
  const details = { ...err.details, peer, peerCode: err.code };
  if (err.code === 'UNAUTHORIZED' || err.code === 'FORBIDDEN')
    return new MamoriError('PEER_AUTH_FAILED', `${peer} refused our credentials: ${err.message ?? err.code}`, {
      details,
    });
  return new MamoriError(knownErrorCode(err.code), `${peer}: ${err.message ?? err.code}`, { details });
}

/** The peer's base URL (which may carry a path prefix) joined with an API path. */
export function peerUrl(base: string, path: string): URL {
  let u: URL;
  try {
    u = new URL(base);
  } catch {
    throw new MamoriError(
      'INVALID_INPUT',
      `${JSON.stringify(base)} is not a URL; give the peer's API URL, e.g. https://10.0.0.2:8443`,
    );
  }
  if (u.protocol !== 'https:')
    throw new MamoriError(
      'INVALID_INPUT',
      `peer sites are called over HTTPS only; ${base} is not an https:// URL (a site started with --insecure-http cannot pair)`,
    );
  u.pathname = `${u.pathname.replace(/\/+$/, '')}${path.split('?')[0]}`;
  u.search = path.includes('?') ? path.slice(path.indexOf('?')) : '';
  return u;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

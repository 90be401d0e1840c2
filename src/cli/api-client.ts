import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import {
  httpsJson,
  knownErrorCode,
  readErrorBody,
  TransportError,
  type HttpsJsonResponse,
} from '../core/https-json-client.js';
import type { CallOptions, Method, PathsWith, ResponseOf } from './api-types.js';

export interface SiteTarget {
  url: string;
  token: string;
  /** PEM of the CA to trust for an https URL; the system store when absent. */
  ca?: string;
}

/**
 * Where the CLI's site is: --data DIR (a local site: URL, token and the site's own CA read
 * from there), or MAMORI_URL and MAMORI_TOKEN, with MAMORI_CA naming the CA certificate
 * file to trust (a site's DATA/tls/ca-cert.pem; without it, the system's CAs).
 */
export async function resolveSite(
  opts: { data?: string; url?: string; token?: string },
  env = process.env,
): Promise<SiteTarget> {
  if (opts.data) {
    const read = async (f: string, what: string): Promise<string> => {
      try {
        return (await readFile(join(opts.data!, f), 'utf8')).trim();
      } catch {
        throw new MamoriError(
          'CONFIG_MISSING',
          `cannot read the ${what} from ${join(opts.data!, f)}: is 'mamori serve --data ${opts.data}' running, and are you allowed to read its folder?`,
        );
      }
    };
    const url = opts.url ?? (await read('url', 'site URL'));
    const token = opts.token ?? (await read('admin-token', 'admin token'));
    return url.startsWith('https:')
      ? { url, token, ca: await read(join('tls', 'ca-cert.pem'), "site's CA certificate") }
      : { url, token };
  }
  const url = opts.url ?? env['MAMORI_URL'];
  const token = opts.token ?? env['MAMORI_TOKEN'];
  if (!url || !token)
    throw new MamoriError(
      'CONFIG_MISSING',
      'no site given: pass --data DIR for a local site, or set MAMORI_URL and MAMORI_TOKEN (and MAMORI_CA for its CA certificate)',
    );
  const caFile = env['MAMORI_CA'];
  if (!caFile) return { url, token };
  try {
    return { url, token, ca: await readFile(caFile, 'utf8') };
  } catch (e) {
    throw new MamoriError('CONFIG_MISSING', `cannot read MAMORI_CA=${caFile}: ${(e as Error).message}`);
  }
}

/** A long operation answers when it is done (a synchronous import, a bench). */
const CLI_TIMEOUT_MS = 15 * 60_000;

/** OpenSSL's names for "the certificate is not from a CA we trust". */
const UNTRUSTED_CERT = /CERT|SELF_SIGNED|UNABLE_TO_(GET_ISSUER|VERIFY)|ALTNAME/;

/**
 * A thin typed client of the site API: routes, path parameters, query, bodies and answers are the
 * OpenAPI document's (src/cli/api-types.ts), so a call the API does not have fails to compile.
 * Server errors come back as MamoriError with the server's code.
 */
export class ApiClient {
  #site: SiteTarget;
  constructor(site: SiteTarget) {
    this.#site = site;
  }

  get<P extends PathsWith<'get'>>(path: P, opts?: CallOptions<P, 'get'>): Promise<ResponseOf<P, 'get'>> {
    return this.#call('get', path, opts);
  }
  post<P extends PathsWith<'post'>>(path: P, opts?: CallOptions<P, 'post'>): Promise<ResponseOf<P, 'post'>> {
    // A POST always carries a JSON body ({} when the route takes none): Fastify refuses an empty one.
    return this.#call('post', path, { ...opts, body: opts?.body ?? {} });
  }
  put<P extends PathsWith<'put'>>(path: P, opts?: CallOptions<P, 'put'>): Promise<ResponseOf<P, 'put'>> {
    return this.#call('put', path, opts);
  }
  delete<P extends PathsWith<'delete'>>(path: P, opts?: CallOptions<P, 'delete'>): Promise<ResponseOf<P, 'delete'>> {
    return this.#call('delete', path, opts);
  }

  #call<R>(method: Method, template: string, opts?: { path?: unknown; query?: unknown; body?: unknown }): Promise<R> {
    return this.request<R>(method.toUpperCase(), routeUrl(template, opts?.path, opts?.query), opts?.body);
  }

  /**
   * Any call, untyped: `path` is the URL path as sent (parameters filled). The typed methods above
   * come through here, and so does the parse-only client (src/cli/parse-only.ts) that stops at it.
   * Through core/https-json-client.ts (node:http rather than fetch: undici costs a CLI call ~150 ms to load). */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = new URL(path, this.#site.url);
    let res: HttpsJsonResponse;
    try {
      res = await httpsJson({
        url,
        method,
        body,
        token: this.#site.token,
        // The site's own CA with the host name checked, or the system's CAs.
        trust: this.#site.ca ? { ca: this.#site.ca, checkHostName: true } : { system: true },
        timeoutMs: CLI_TIMEOUT_MS,
        // The CLI reads whatever its own site answers (a long list), and polls a job on one connection.
        maxBytes: Number.POSITIVE_INFINITY,
        reuseConnection: true,
      });
    } catch (e) {
      throw unreachable(this.#site.url, e);
    }
    if (res.status < 200 || res.status >= 300) {
      const err = readErrorBody(res.json);
      throw new MamoriError(
        knownErrorCode(err?.code),
        err?.message ?? `HTTP ${res.status}`,
        err?.details ? { details: err.details } : {},
      );
    }
    return res.json as T;
  }
}

/** A route template with its `{name}`s filled (each encoded) and the query appended: `/vms/{name}` -> `/vms/web`. */
export function routeUrl(template: string, path?: unknown, query?: unknown): string {
  const params = (path ?? {}) as Record<string, unknown>;
  const filled = template.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = params[k];
    if (v === undefined) throw new MamoriError('INTERNAL', `route ${template} called without its ${k}`);
    return encodeURIComponent(String(v));
  });
  const entries = Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== undefined);
  return entries.length === 0
    ? filled
    : `${filled}?${new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString()}`;
}

/** A site call that got no answer: Node's own words, and what to do about an untrusted certificate. */
function unreachable(site: string, e: unknown): MamoriError {
  const t = e instanceof TransportError ? e : null;
  const why = t?.failure === 'timeout' ? 'no answer within 15 minutes' : (t?.systemMessage ?? (e as Error).message);
  const hint = UNTRUSTED_CERT.test(t?.sysCode ?? '')
    ? ` (the site's certificate is not trusted: use --data DIR, or set MAMORI_CA to the site's DATA/tls/ca-cert.pem)`
    : '';
  return new MamoriError('SITE_UNREACHABLE', `cannot reach the site at ${site}: ${why}${hint}`);
}

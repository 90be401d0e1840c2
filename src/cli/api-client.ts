import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { MamoriError } from '../core/mamori-error.js';
import { ERROR_CODES, type ErrorCode } from '../core/error-codes.js';

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
export async function resolveSite(opts: { data?: string; url?: string; token?: string }, env = process.env): Promise<SiteTarget> {
  if (opts.data) {
    const read = async (f: string, what: string): Promise<string> => {
      try {
        return (await readFile(join(opts.data!, f), 'utf8')).trim();
      } catch {
        throw new MamoriError('CONFIG_MISSING', `cannot read the ${what} from ${join(opts.data!, f)}: is 'mamori serve --data ${opts.data}' running, and are you allowed to read its folder?`);
      }
    };
    const url = opts.url ?? (await read('url', 'site URL'));
    const token = opts.token ?? (await read('admin-token', 'admin token'));
    return url.startsWith('https:') ? { url, token, ca: await read(join('tls', 'ca-cert.pem'), "site's CA certificate") } : { url, token };
  }
  const url = opts.url ?? env['MAMORI_URL'];
  const token = opts.token ?? env['MAMORI_TOKEN'];
  if (!url || !token) throw new MamoriError('CONFIG_MISSING', 'no site given: pass --data DIR for a local site, or set MAMORI_URL and MAMORI_TOKEN (and MAMORI_CA for its CA certificate)');
  const caFile = env['MAMORI_CA'];
  if (!caFile) return { url, token };
  try {
    return { url, token, ca: await readFile(caFile, 'utf8') };
  } catch (e) {
    throw new MamoriError('CONFIG_MISSING', `cannot read MAMORI_CA=${caFile}: ${(e as Error).message}`);
  }
}

/** OpenSSL's names for "the certificate is not from a CA we trust". */
const UNTRUSTED_CERT = /CERT|SELF_SIGNED|UNABLE_TO_(GET_ISSUER|VERIFY)|ALTNAME/;

/** A thin typed client of the site API; server errors come back as MamoriError with the server's code. */
export class ApiClient {
  #site: SiteTarget;
  constructor(site: SiteTarget) {
    this.#site = site;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }
  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /**
   * node:http rather than fetch: fetch loads undici on first use, which costs a CLI call
   * about 150 ms on these machines.
   */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = new URL(path, this.#site.url);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    let res: { status: number; text: string };
    try {
      res = await new Promise((resolve, reject) => {
        const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
          method,
          ...(this.#site.ca && url.protocol === 'https:' ? { ca: this.#site.ca } : {}),
          headers: { authorization: `Bearer ${this.#site.token}`, ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }) },
          timeout: 15 * 60_000,
        }, (r) => {
          let text = '';
          r.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: r.statusCode ?? 0, text })).on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error('no answer within 15 minutes')));
        req.on('error', reject);
        req.end(payload);
      });
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      const hint = UNTRUSTED_CERT.test(code)
        ? ` (the site's certificate is not trusted: use --data DIR, or set MAMORI_CA to the site's DATA/tls/ca-cert.pem)`
        : '';
      throw new MamoriError('SITE_UNREACHABLE', `cannot reach the site at ${this.#site.url}: ${(e as Error).message}${hint}`);
    }
    const json = res.text ? (JSON.parse(res.text) as unknown) : undefined;
    if (res.status < 200 || res.status >= 300) {
      const err = (json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
      const code = (err?.code && err.code in ERROR_CODES ? err.code : 'INTERNAL') as ErrorCode;
      throw new MamoriError(code, err?.message ?? `HTTP ${res.status}`, err?.details ? { details: err.details } : {});
    }
    return json as T;
  }
}

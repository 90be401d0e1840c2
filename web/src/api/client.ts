import type { paths } from './schema';

/**
 * A thin typed layer over fetch: routes, path parameters, bodies and answers come from the
 * types generated from the site's OpenAPI document (schema.d.ts), so the console cannot
 * call a route the API does not have or read a field it does not send.
 */
type Method = 'get' | 'post' | 'delete';
type Op<P extends keyof paths, M extends Method> = paths[P][M];
export type PathsWith<M extends Method> = {
  [P in keyof paths]: Op<P, M> extends { responses: unknown } ? P : never;
}[keyof paths];

type Success<O> = O extends { responses: infer R } ? R[Extract<keyof R, 200 | 201 | 202 | 204>] : never;
type JsonOf<X> = X extends { content: { 'application/json': infer J } } ? J : undefined;
export type ResponseOf<P extends keyof paths, M extends Method> = JsonOf<Success<Op<P, M>>>;

type PathParams<O> = O extends { parameters: { path: infer T } } ? T : undefined;
type QueryOf<O> = O extends { parameters: { query?: infer Q } } ? Q : undefined;
type BodyOf<O> = O extends { requestBody?: { content: { 'application/json': infer B } } } ? B : undefined;
export type CallOptions<O> = { path?: PathParams<O>; query?: QueryOf<O>; body?: BodyOf<O> };

/** An error answer of the API: `{ error: { code, message } }`, or a network failure (code NETWORK). */
export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  readonly requestId: string | undefined;

  constructor(code: string, message: string, status: number, requestId?: string) {
    super(message);
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

const TOKEN_KEY = 'mamori-token';

/** The token lives in sessionStorage: gone when the tab closes, never in a cookie the browser would send by itself. */
export const session = {
  token: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (token: string): void => sessionStorage.setItem(TOKEN_KEY, token),
  clear: (): void => sessionStorage.removeItem(TOKEN_KEY),
  /** Called when the API refuses the token, so the app shows the login again. */
  onUnauthorized: (_e: ApiError): void => undefined,
};

function fill(template: string, params: unknown): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) =>
    encodeURIComponent(String((params as Record<string, unknown> | undefined)?.[k] ?? '')),
  );
}

export function authHeaders(token = session.token()): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** Reads an error answer into an ApiError (the API's code and message, or the HTTP status). */
export async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string; requestId?: string } }).error;
    if (e?.code && e.message) return new ApiError(e.code, e.message, res.status, e.requestId);
  } catch {
    // not JSON: a proxy's page, or the server died mid-answer
  }
  return new ApiError(`HTTP_${res.status}`, text.slice(0, 300) || res.statusText, res.status);
}

/** Any call: the raw Response when it succeeded, an ApiError otherwise. */
export async function send(method: string, url: string, body?: unknown, token?: string): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { ...authHeaders(token), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (e) {
    throw new ApiError('NETWORK', `the site server did not answer: ${(e as Error).message}`, 0);
  }
  if (res.ok) return res;
  const err = await errorOf(res);
  if (err.code === 'UNAUTHORIZED') session.onUnauthorized(err);
  throw err;
}

async function call<P extends keyof paths, M extends Method>(
  method: M,
  path: P,
  opts: CallOptions<Op<P, M>> = {},
): Promise<ResponseOf<P, M>> {
  const query = opts.query ? `?${new URLSearchParams(opts.query as Record<string, string>).toString()}` : '';
  const res = await send(method.toUpperCase(), fill(path as string, opts.path) + query, opts.body);
  return (res.status === 204 ? undefined : await res.json()) as ResponseOf<P, M>;
}

export const api = {
  get: <P extends PathsWith<'get'>>(path: P, opts?: CallOptions<Op<P, 'get'>>) => call('get', path, opts),
  post: <P extends PathsWith<'post'>>(path: P, opts?: CallOptions<Op<P, 'post'>>) => call('post', path, opts),
  delete: <P extends PathsWith<'delete'>>(path: P, opts?: CallOptions<Op<P, 'delete'>>) => call('delete', path, opts),
};

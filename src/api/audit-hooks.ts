import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditLog, AuditRecord } from '../audit/audit-log.js';
import './request-caller.js';

export interface AuditHookDeps {
  audit: AuditLog;
}

/** Methods that only read: not recorded unless authentication was refused. */
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** A route parameter longer than this is cut: the log records which object, not whatever was sent. */
export const MAX_TARGET_CHARS = 200;
const MAX_TARGET_KEYS = 8;
/** The status recorded for a call whose client closed the connection before the answer. */
export const CLIENT_CLOSED = 499;

/**
 * Records every state-changing call (any method but GET, HEAD and OPTIONS, on every route,
 * public or not, unknown ones too) and every refused token (401, any method) in the audit
 * log, once per request, when its answer has been sent. Reads refused because their address
 * is rate-limited (429) are not: the failures that got it limited are recorded, and a client
 * hammering GET must not grow the log without end.
 *
 * A client that goes away before its answer (Ctrl-C on a long call) gets no 'finish', so no
 * onResponse: its call is recorded when the connection closes, with status 499 (nginx's
 * "client closed request"), since the call may still have taken effect.
 *
 * Register before the routes: hooks reach only the routes added after them.
 */
export function registerAuditHooks(app: FastifyInstance, deps: AuditHookDeps): void {
  const errorCodes = new WeakMap<FastifyRequest, string>();
  const recorded = new WeakSet<FastifyRequest>();

  // source: the address once the socket is gone is undefined, so the close path passes the one it saw.
  const record = async (req: FastifyRequest, status: number, source: string | undefined = req.ip): Promise<void> => {
    if (recorded.has(req)) return;
    recorded.add(req);
    const entry: AuditRecord = {
      at: new Date().toISOString(),
      tokenId: req.caller?.id ?? null,
      role: req.caller?.role ?? null,
      source: source ?? '(unknown)',
      method: req.method,
      route: req.routeOptions.url ?? '(no route)',
      // An unknown route has no parameters: its path (without the query) says what was tried.
      target: req.routeOptions.url ? targetOf(req.params) : targetOf({ path: req.url.split('?')[0] }),
      status,
      errorCode: errorCodes.get(req) ?? null,
      requestId: req.id,
    };
    // The answer is already sent (or its client gone), so a failure here cannot change it; it must still be seen.
    try {
      await deps.audit.append(entry);
    } catch (err) {
      req.log.error({ err, reqId: req.id, audit: entry }, 'could not write the audit log entry');
    }
  };

  app.addHook('onRequest', async (req, reply) => {
    if (READ_METHODS.has(req.method)) return;
    const source = req.ip;
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) void record(req, CLIENT_CLOSED, source);
    });
  });

  // The answer's error code is only in its body, which onResponse no longer sees.
  app.addHook('onSend', async (req, reply, payload) => {
    if (reply.statusCode >= 400 && typeof payload === 'string') {
      const error = errorOf(payload);
      if (error?.code) errorCodes.set(req, error.code);
      const retryAfter = error?.details?.['retryAfterSeconds'];
      if (error?.code === 'TOO_MANY_AUTH_FAILURES' && typeof retryAfter === 'number')
        void reply.header('retry-after', String(retryAfter));
    }
    return payload;
  });

  app.addHook('onResponse', async (req, reply) => {
    if (READ_METHODS.has(req.method) && reply.statusCode !== 401) return;
    await record(req, reply.statusCode);
  });
}

function targetOf(params: unknown): Record<string, string> | null {
  if (params === null || typeof params !== 'object') return null;
  const entries = Object.entries(params as Record<string, unknown>).slice(0, MAX_TARGET_KEYS);
  if (entries.length === 0) return null;
  return Object.fromEntries(
    entries.map(([k, v]) => {
      const text = typeof v === 'string' ? v : String(v);
      return [k.slice(0, 64), text.length > MAX_TARGET_CHARS ? `${text.slice(0, MAX_TARGET_CHARS)}…` : text];
    }),
  );
}

function errorOf(payload: string): { code?: string; details?: Record<string, unknown> } | undefined {
  try {
    const body = JSON.parse(payload) as { error?: { code?: unknown; details?: unknown } } | null;
    const e = body?.error;
    if (!e || typeof e.code !== 'string') return undefined;
    return {
      code: e.code,
      ...(e.details && typeof e.details === 'object' ? { details: e.details as Record<string, unknown> } : {}),
    };
  } catch {
    return undefined;
  }
}

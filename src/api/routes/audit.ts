import type { FastifyPluginAsync } from 'fastify';
import type { AuditLog } from '../../audit/audit-log.js';
import { MamoriError } from '../../core/mamori-error.js';
import { errorResponses } from '../schemas.js';

const nullableString = { type: ['string', 'null'] } as const;

export const auditEntrySchema = {
  type: 'object',
  required: [
    'seq',
    'at',
    'tokenId',
    'role',
    'source',
    'method',
    'route',
    'target',
    'status',
    'errorCode',
    'requestId',
    'prevHash',
    'hash',
  ],
  properties: {
    seq: { type: 'integer' },
    at: { type: 'string' },
    tokenId: nullableString,
    role: nullableString,
    source: { type: 'string' },
    method: { type: 'string' },
    route: { type: 'string' },
    target: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
    status: { type: 'integer' },
    errorCode: nullableString,
    requestId: nullableString,
    prevHash: { type: 'string' },
    hash: { type: 'string' },
  },
} as const;

const headSchema = {
  type: ['object', 'null'],
  required: ['seq', 'hash'],
  properties: { seq: { type: 'integer' }, hash: { type: 'string' } },
} as const;

const verificationSchema = {
  type: 'object',
  required: ['ok', 'entries', 'head'],
  properties: {
    ok: { type: 'boolean' },
    entries: { type: 'integer' },
    head: headSchema,
    firstBad: {
      type: 'object',
      required: ['seq', 'problem', 'message'],
      properties: {
        seq: { type: 'integer' },
        problem: { type: 'string', enum: ['edited', 'sequence-gap', 'chain-broken', 'head-mismatch'] },
        message: { type: 'string' },
      },
    },
  },
} as const;

interface ListQuery {
  since?: string;
  token?: string;
  before?: string;
  limit?: string;
}

/** The audit log of state-changing and refused API calls: admin only, since it names every token's doings. */
export function auditRoutes(deps: { audit: AuditLog }): FastifyPluginAsync {
  return async (app) => {
    app.get<{ Querystring: ListQuery }>(
      '/audit',
      {
        schema: {
          summary:
            'Audit log entries, newest first: since an ISO time, of one token, before an entry number (paging back)',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              since: { type: 'string', minLength: 1, maxLength: 64 },
              token: { type: 'string', minLength: 1, maxLength: 128 },
              before: { type: 'string', pattern: '^[1-9][0-9]{0,15}$' },
              limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
            },
          },
          response: { 200: { type: 'array', items: auditEntrySchema }, ...errorResponses },
        },
      },
      async (req) => {
        const q = req.query;
        return deps.audit.list({
          ...(q.since !== undefined ? { since: isoTime(q.since) } : {}),
          ...(q.token !== undefined ? { tokenId: q.token } : {}),
          ...(q.before !== undefined ? { beforeSeq: Number(q.before) } : {}),
          limit: q.limit ? Number(q.limit) : 100,
        });
      },
    );
    app.get(
      '/audit/verify',
      {
        schema: {
          summary: "Walk the audit log's hash chain: ok, or the first entry edited, removed or reordered",
          response: { 200: verificationSchema, ...errorResponses },
        },
      },
      async () => deps.audit.verify(),
    );
  };
}

/** The stored times are ISO strings in UTC: a since given any other way is normalized first. */
function isoTime(text: string): string {
  const ms = Date.parse(text);
  if (Number.isNaN(ms))
    throw new MamoriError(
      'INVALID_INPUT',
      `since must be a time such as 2026-12-05T16:00:00Z, got ${JSON.stringify(text)}`,
    );
  return new Date(ms).toISOString();
}

import type { FastifyPluginAsync } from 'fastify';
import { ISSUABLE_ROLES, type TokenService } from '../../auth/token-service.js';
import { errorResponses } from '../schemas.js';
import { callerOf } from '../request-caller.js';

const tokenSchema = {
  type: 'object',
  required: ['id', 'name', 'role', 'createdAt', 'expiresAt', 'lastUsedAt'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    role: { type: 'string' },
    createdAt: { type: 'string' },
    expiresAt: { type: ['string', 'null'] },
    lastUsedAt: { type: ['string', 'null'] },
  },
} as const;

/** API tokens (admin only, route-roles.ts): issue one for a person or a script, list, revoke. */
export function tokenRoutes(deps: { tokenService: TokenService }): FastifyPluginAsync {
  const t = deps.tokenService;
  return async (app) => {
    app.get(
      '/me',
      {
        schema: {
          summary: 'The calling token: its id, name and role (the console shows only what the role may do)',
          response: {
            200: {
              type: 'object',
              required: ['id', 'name', 'role'],
              properties: { id: { type: 'string' }, name: { type: 'string' }, role: { type: 'string' } },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => callerOf(req),
    );
    app.get(
      '/tokens',
      {
        schema: {
          summary: 'API tokens of this site (never their secret)',
          response: { 200: { type: 'array', items: tokenSchema }, ...errorResponses },
        },
      },
      async () => t.list(),
    );
    app.post<{ Body: { name: string; role: string; expires?: string } }>(
      '/tokens',
      {
        schema: {
          summary: 'Issue a token with a role (admin, operator, viewer); its secret is answered once and never stored',
          body: {
            type: 'object',
            required: ['name', 'role'],
            additionalProperties: false,
            properties: {
              name: { type: 'string', minLength: 1, maxLength: 63 },
              role: { type: 'string', enum: [...ISSUABLE_ROLES] },
              expires: { type: 'string', maxLength: 16, description: 'lifetime: 90m, 12h, 30d' },
            },
          },
          response: {
            201: {
              type: 'object',
              required: [...tokenSchema.required, 'token'],
              properties: { ...tokenSchema.properties, token: { type: 'string' } },
            },
            ...errorResponses,
          },
        },
      },
      async (req, reply) => reply.status(201).send(await t.create(req.body)),
    );
    app.delete<{ Params: { id: string } }>(
      '/tokens/:id',
      {
        schema: {
          summary:
            "Revoke a token (by id, or by name when only one has it); not the last admin token, nor a paired site's",
          params: {
            type: 'object',
            required: ['id'],
            properties: { id: { type: 'string', minLength: 1, maxLength: 63 } },
          },
          response: { 200: tokenSchema, ...errorResponses },
        },
      },
      async (req) => t.revoke(req.params.id),
    );
  };
}

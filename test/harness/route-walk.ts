import type { FastifyInstance } from 'fastify';
import { ROLES, type Role } from '../../src/core/roles.js';
import { OpenApiCheck } from './openapi-check.js';

export type OpenApiOperation = {
  'x-roles'?: string[];
  'x-admin-only-fields'?: string[];
  responses?: Record<string, { content?: Record<string, unknown> }>;
};
export type OpenApiDoc = { paths: Record<string, Record<string, OpenApiOperation>> };

/**
 * The route-by-role walk (issue 18): every operation of the site's OpenAPI document, called
 * with a token of every role and with none. A role the route declares gets past authorization
 * (whatever the handler then says of the made-up names and the invalid body), any other role
 * gets 403 FORBIDDEN, no token 401 UNAUTHORIZED; a public route needs none; nothing answers
 * 500. Bodies are deliberately invalid, so no call does real work. Returns how many
 * combinations were called and what failed.
 */
export async function walkRoutesByRole(
  app: FastifyInstance,
  tokens: Record<Role, string>,
): Promise<{ checked: number; failures: string[] }> {
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as OpenApiDoc;
  const api = new OpenApiCheck(doc);
  const concrete = (path: string): string => path.replace(/\{([^}]+)\}/g, (_m, p: string) => `nope-${p}`);
  let checked = 0;
  const failures: string[] = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(ops)) {
      const method = m.toUpperCase() as 'GET' | 'POST' | 'PUT' | 'DELETE';
      const allowed = op['x-roles'] ?? [];
      const isPublic = allowed.length === 0;
      const hasBody = method === 'POST' || method === 'PUT';
      for (const who of [...ROLES, null]) {
        const res = await app.inject({
          method,
          url: concrete(path),
          headers: {
            ...(who ? { authorization: `Bearer ${tokens[who]}` } : {}),
            ...(hasBody ? { 'content-type': 'application/json' } : {}),
          },
          ...(hasBody ? { payload: JSON.stringify({ 'x-not-a-field': true }) } : {}),
        });
        checked += 1;
        const body = res.headers['content-type']?.toString().startsWith('application/json') ? res.json() : undefined;
        const code = (body as { error?: { code?: string } } | undefined)?.error?.code;
        const label = `${method} ${path} as ${who ?? 'no token'} -> ${res.statusCode} ${code ?? ''}`;
        if (res.statusCode >= 500) failures.push(`${label}: a server error`);
        else if (isPublic) {
          if (res.statusCode === 401 || res.statusCode === 403) failures.push(`${label}: public, yet refused`);
        } else if (who === null) {
          if (res.statusCode !== 401 || code !== 'UNAUTHORIZED') failures.push(`${label}: expected 401 UNAUTHORIZED`);
        } else if (allowed.includes(who)) {
          if (code === 'UNAUTHORIZED' || code === 'FORBIDDEN')
            failures.push(`${label}: ${who} is declared, yet refused`);
        } else if (res.statusCode !== 403 || code !== 'FORBIDDEN') failures.push(`${label}: expected 403 FORBIDDEN`);
        const documented = op.responses?.[String(res.statusCode)];
        try {
          if (body && documented?.content?.['application/json']) api.check(method, path, res.statusCode, body);
          else if (body && res.statusCode >= 400 && !documented)
            failures.push(`${label}: status not in the OpenAPI document`);
        } catch (e) {
          failures.push(`${label}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    }
  }
  return { checked, failures };
}

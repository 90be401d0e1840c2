import type { FastifyInstance } from 'fastify';
import type { AuthFailureLimiter } from './auth-failure-limiter.js';
import { MamoriError } from '../core/mamori-error.js';
import type { TokenRepo } from '../store/repos/token-repo.js';
import { routeAccess, type RouteAccess } from './route-roles.js';
import './request-caller.js';

/**
 * Every route declares its roles in route-roles.ts; this makes that table the law:
 * - a route missing from the table cannot be registered (buildApp fails, and so every test);
 * - the OpenAPI document carries each operation's roles as `x-roles`;
 * - before any handler runs, the token is checked and its role must be one the route allows;
 * - body fields that name host paths are refused to anyone but an admin.
 * Must be installed before any route is registered (and before @fastify/swagger, which
 * reads each route's schema as it is registered).
 */
export function installAccessControl(
  app: FastifyInstance,
  deps: { tokens: TokenRepo; authFailures?: AuthFailureLimiter },
): void {
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      const access = routeAccess(method, route.url);
      if (!access) throw new Error(`route ${method} ${route.url} declares no roles: add it to src/api/route-roles.ts`);
      // OpenAPI extensions (x-*) pass through @fastify/swagger into the operation object.
      const tags: Record<string, unknown> = { 'x-roles': access.roles === 'public' ? [] : [...access.roles] };
      if (access.adminOnlyFields) tags['x-admin-only-fields'] = [...access.adminOnlyFields];
      if (method !== 'HEAD') route.schema = { ...(route.schema ?? {}), ...tags };
    }
  });

  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (req) => {
    const url = req.routeOptions.url;
    // No such route: a token is still needed, so an anonymous caller learns nothing but 401.
    const access = url === undefined ? undefined : routeAccess(req.method, url);
    if (access?.roles === 'public') return;
    // An address that keeps sending wrong tokens waits (429), whatever it sends now.
    deps.authFailures?.check(req.ip);
    const header = req.headers.authorization;
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
    if (!token) {
      throw new MamoriError(
        'UNAUTHORIZED',
        'missing API token: send "Authorization: Bearer TOKEN" (the admin token is in DATA/admin-token)',
      );
    }
    const who = await deps.tokens.verify(token);
    if (!who) {
      deps.authFailures?.failed(req.ip);
      throw new MamoriError('UNAUTHORIZED', 'the API token is not valid for this site (unknown, revoked or expired)');
    }
    req.caller = who;
    if (access && !(access.roles as readonly string[]).includes(who.role))
      throw forbidden(access, who.role, `${req.method} ${url}`);
  });

  // After the body is parsed and validated: fields that name host paths.
  app.addHook('preHandler', async (req) => {
    const url = req.routeOptions.url;
    const access = url === undefined ? undefined : routeAccess(req.method, url);
    if (!access?.adminOnlyFields || req.caller?.role === 'admin') return;
    const body = req.body;
    if (!body || typeof body !== 'object') return;
    const set = access.adminOnlyFields.filter((f) => Object.hasOwn(body, f));
    if (set.length > 0) {
      throw new MamoriError(
        'FORBIDDEN',
        `${set.join(' and ')} name${set.length === 1 ? 's' : ''} a host path, which only an admin token may do; the token sent is a ${req.caller?.role} token`,
        { details: { fields: set } },
      );
    }
  });
}

function forbidden(access: RouteAccess, role: string, route: string): MamoriError {
  const roles = access.roles as readonly string[];
  const needs =
    roles.length === 1
      ? `a${roles[0] === 'admin' || roles[0] === 'operator' ? 'n' : ''} ${roles[0]} token`
      : `one of the roles ${roles.join(', ')}`;
  const hint =
    role === 'site'
      ? ': a site token is only for the calls its peer makes'
      : roles.includes('admin')
        ? "; create one with 'mamori token create --role ROLE --name NAME' as an admin"
        : '';
  return new MamoriError('FORBIDDEN', `${route} needs ${needs}; the token sent is a ${role} token${hint}`, {
    details: { route, role, allowed: roles },
  });
}

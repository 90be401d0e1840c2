import type { FastifyRequest } from 'fastify';
import { MamoriError } from '../core/mamori-error.js';
import type { TokenIdentity, TokenRole } from '../store/repos/token-repo.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The token's owner, set by the auth hook; null on public routes. */
    caller: TokenIdentity | null;
  }
}

/** A preHandler that lets only these token roles through (FORBIDDEN otherwise). */
export function requireRole(...roles: TokenRole[]): (req: FastifyRequest) => Promise<void> {
  return async (req) => {
    const role = req.caller?.role;
    if (!role || !(roles as string[]).includes(role)) {
      throw new MamoriError('FORBIDDEN', `this needs a${roles[0] === 'admin' ? 'n' : ''} ${roles.join(' or ')} token; the token sent is ${role ? `a ${role} token` : 'missing'}`);
    }
  };
}

/** The caller of a route guarded by requireRole. */
export function callerOf(req: FastifyRequest): TokenIdentity {
  if (!req.caller) throw new MamoriError('UNAUTHORIZED', 'missing API token');
  return req.caller;
}

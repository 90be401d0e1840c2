import type { FastifyRequest } from 'fastify';
import { MamoriError } from '../core/mamori-error.js';
import type { TokenIdentity } from '../store/repos/token-repo.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The token's owner, set by the auth hook; null on public routes. */
    caller: TokenIdentity | null;
  }
}

/** The caller of a route that takes a token (every route but the public ones of route-roles.ts). */
export function callerOf(req: FastifyRequest): TokenIdentity {
  if (!req.caller) throw new MamoriError('UNAUTHORIZED', 'missing API token');
  return req.caller;
}

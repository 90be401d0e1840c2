import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { installAccessControl } from '../../../src/api/access-control.js';
import type { MamoriError } from '../../../src/core/mamori-error.js';
import type { TokenRepo } from '../../../src/store/repos/token-repo.js';

const noTokens = { verify: async () => undefined } as unknown as TokenRepo;

test('a route that route-roles.ts does not declare cannot be registered', async () => {
  const app = Fastify();
  installAccessControl(app, { tokens: noTokens });
  assert.throws(
    () => app.get('/not-declared-anywhere', async () => ({ ok: true })),
    /GET \/not-declared-anywhere declares no roles: add it to src\/api\/route-roles\.ts/,
  );
});

test('a declared route is tagged with its roles and refuses an anonymous caller', async () => {
  const app = Fastify();
  installAccessControl(app, { tokens: noTokens });
  let schema: Record<string, unknown> | undefined;
  app.addHook('onRoute', (r) => void (r.method === 'GET' && (schema = r.schema as Record<string, unknown>)));
  app.setErrorHandler((e: MamoriError, _req, reply) => reply.status(e.httpStatus).send({ code: e.code }));
  app.get('/vms', async () => []);
  await app.ready();
  assert.deepEqual(schema?.['x-roles'], ['admin', 'operator', 'viewer']);
  const res = await app.inject({ method: 'GET', url: '/vms' });
  assert.equal(res.statusCode, 401);
  assert.equal(res.json().code, 'UNAUTHORIZED');
});

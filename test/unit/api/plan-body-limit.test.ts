import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppDeps } from '../../../src/api/build-app.js';
import { createLogger } from '../../../src/core/logger.js';
import { PLAN_BODY_LIMIT, PLAN_LIMITS } from '../../../src/plans/plan-limits.js';
import { parsePlanYaml } from '../../../src/plans/plan-spec.js';
import { AuthFailureLimiter } from '../../../src/api/auth-failure-limiter.js';

/**
 * POST /plans refuses a body over its limit before reading or parsing it, as a typed error.
 * Only the plan service is real enough to parse; nothing else is reached.
 */
let app: FastifyInstance;
const applied: string[] = [];

before(async () => {
  const given: Partial<AppDeps> = {
    siteName: 'site-a',
    logger: createLogger({ level: 'silent' }),
    tokens: { verify: async () => ({ name: 'admin', role: 'admin' }) } as unknown as AppDeps['tokens'],
    authFailures: new AuthFailureLimiter(),
    audit: { append: async () => undefined } as unknown as AppDeps['audit'],
    plans: {
      apply: async (input: { yaml?: string }) => {
        applied.push(input.yaml ?? '');
        parsePlanYaml(input.yaml ?? '');
        return {};
      },
    } as unknown as AppDeps['plans'],
  };
  // Every other service is never called by these requests: an empty object stands in.
  const deps = new Proxy(given, {
    get: (t, k: string) =>
      k in t ? t[k as keyof AppDeps] : ['https', 'metrics', 'alerts'].includes(k) ? undefined : {},
  }) as AppDeps;
  app = await buildApp(deps);
});
after(async () => app.close());

const post = (yaml: string) =>
  app.inject({ method: 'POST', url: '/plans', headers: { authorization: 'Bearer t' }, payload: { yaml } });

test('a plan body over the route limit is 413 BODY_TOO_LARGE, and never reaches the parser', async () => {
  const r = await post('x'.repeat(PLAN_BODY_LIMIT));
  assert.equal(r.statusCode, 413);
  const body = r.json<{ error: { code: string; message: string } }>();
  assert.equal(body.error.code, 'BODY_TOO_LARGE');
  assert.match(body.error.message, new RegExp(`${PLAN_BODY_LIMIT} bytes`));
  assert.deepEqual(applied, []);
});

test('plan text within the body limit but over the text limit is 413 PLAN_TOO_LARGE, naming the limit', async () => {
  const r = await post(`name: p\n# ${'x'.repeat(PLAN_LIMITS.bytes)}\n`);
  assert.equal(r.statusCode, 413);
  const body = r.json<{ error: { code: string; message: string } }>();
  assert.equal(body.error.code, 'PLAN_TOO_LARGE');
  assert.match(body.error.message, /at most 262144 bytes/);
  assert.ok(r.body.length < 1000);
});

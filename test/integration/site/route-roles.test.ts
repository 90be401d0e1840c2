import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSite, type Site } from '../../../src/main.js';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { TokenRepo } from '../../../src/store/repos/token-repo.js';
import { loadSecretKey } from '../../../src/core/secret-box.js';
import { ROUTE_ROLES } from '../../../src/api/route-roles.js';
import type { Role } from '../../../src/core/roles.js';
import { walkRoutesByRole, type OpenApiDoc } from '../../harness/route-walk.js';
import { runCli } from '../../harness/site-process.js';

/*
 * The route-by-role walk (issue 18): every operation of the site's OpenAPI document, called
 * with a token of every role and with none. A role the route declares gets past
 * authorization (whatever the handler then answers about the made-up names and the invalid
 * body), any other role gets 403, no token gets 401; a public route needs none. Bodies are
 * deliberately invalid, so no call does real work.
 */

let site: Site;
let dir: string;
const tokens = {} as Record<Role, string>;
let doc: OpenApiDoc;

before(async () => {
  process.env['MAMORI_ACCEL'] = 'tcg';
  dir = await mkdtemp(join(tmpdir(), 'mamori-roles-'));
  site = await openSite({ dataDir: join(dir, 'data'), name: 'roles-test' });
  tokens.admin = (await readFile(site.paths.adminToken, 'utf8')).trim();
  for (const role of ['operator', 'viewer'] as const) {
    const res = await site.app.inject({
      method: 'POST',
      url: '/tokens',
      headers: { authorization: `Bearer ${tokens.admin}` },
      payload: { name: `t-${role}`, role },
    });
    assert.equal(res.statusCode, 201, res.body);
    tokens[role] = res.json().token;
  }
  // A site token is issued only by pairing; the store makes one as pairing would.
  const store = await openSqliteStore(site.paths.database);
  tokens.site = await new TokenRepo(store.handle, (await loadSecretKey(site.paths.secretKey, false)).box).create(
    'site:ghost',
    'site',
  );
  await store.close();
  doc = (await site.app.inject({ method: 'GET', url: '/openapi.json' })).json();
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

const fastifyRoute = (path: string): string => path.replace(/\{([^}]+)\}/g, ':$1');

test('the OpenAPI document shows every operation with its roles, exactly as route-roles.ts declares them', () => {
  const seen = new Set<string>();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const key = `${method.toUpperCase()} ${fastifyRoute(path)}`;
      seen.add(key);
      const declared = ROUTE_ROLES[key];
      assert.ok(declared, `${key} is in the API but not in route-roles.ts`);
      assert.deepEqual(op['x-roles'], declared.roles === 'public' ? [] : [...declared.roles], `${key}: x-roles`);
    }
  }
  // Every declaration names a route that exists (the hidden ones are the console and the API's own description).
  const hidden = new Set(['GET /health', 'GET /openapi.json', 'GET /', 'GET /ui', 'GET /ui/*', 'GET /favicon.ico']);
  for (const key of Object.keys(ROUTE_ROLES))
    if (!hidden.has(key)) assert.ok(seen.has(key), `route-roles.ts declares ${key}, which the API does not have`);
});

test('every route with every role and with no token gets its declared answer', async () => {
  const { checked, failures } = await walkRoutesByRole(site.app, tokens);
  assert.deepEqual(failures, []);
  assert.ok(checked >= 5 * 100, `walked ${checked} route and role combinations`);
  process.stdout.write(`routes_times_roles_checked ${checked}\n`);
});

test('host-path fields are refused to an operator, who may still make a pool disk', async () => {
  const as = (role: Role, payload: unknown) =>
    site.app.inject({
      method: 'POST',
      url: '/disks',
      headers: { authorization: `Bearer ${tokens[role]}` },
      payload: payload as object,
    });
  const rdm = await as('operator', { name: 'lun0', rdm: { device: '/etc/shadow' } });
  assert.equal(rdm.statusCode, 403);
  assert.match(rdm.json().error.message, /rdm names a host path/);
  const path = await as('operator', { name: 'p1', size: '1M', path: '../../x.qcow2' });
  assert.equal(path.statusCode, 403);
  const ok = await as('operator', { name: 'op-disk', size: '1M' });
  assert.equal(ok.statusCode, 201, ok.body);
  const viewer = await as('viewer', { name: 'v-disk', size: '1M' });
  assert.equal(viewer.statusCode, 403);
});

test("a plan with command steps (programs run on the host) is an admin's to apply; prompts are an operator's", async () => {
  const plan = (step: string) =>
    `name: p1\nprotectedSite: nowhere\nprotectedVms: [db]\nsteps:\n  - after: priority 1\n    ${step}\n`;
  const as = (role: Role, yaml: string) =>
    site.app.inject({
      method: 'POST',
      url: '/plans',
      headers: { authorization: `Bearer ${tokens[role]}` },
      payload: { yaml },
    });
  const cmd = await as('operator', plan('command: ["/bin/sh", "-c", "id > /tmp/owned"]'));
  assert.equal(cmd.statusCode, 403);
  assert.match(cmd.json().error.message, /command step.*only an admin/);
  // Past the role check both times: the plan then fails on its (made-up) protected site.
  for (const [role, step] of [
    ['operator', 'prompt: "check the database"'],
    ['admin', 'command: ["/usr/bin/logger", "db up"]'],
  ] as const) {
    const r = await as(role, plan(step));
    assert.notEqual(r.json().error?.code, 'FORBIDDEN', `${role}: ${r.body}`);
  }
});

test('tokens: created with a role and an expiry, listed without secrets, revoked, refused once revoked or expired', async () => {
  const admin = { authorization: `Bearer ${tokens.admin}` };
  const made = await site.app.inject({
    method: 'POST',
    url: '/tokens',
    headers: admin,
    payload: { name: 'ci', role: 'viewer', expires: '30d' },
  });
  assert.equal(made.statusCode, 201);
  const t = made.json();
  assert.ok(Date.parse(t.expiresAt) > Date.now() + 29 * 86_400_000);
  const list = await site.app.inject({ method: 'GET', url: '/tokens', headers: admin });
  assert.ok(!list.body.includes(t.token), 'a listing never shows a secret');
  assert.ok(list.json().some((x: { id: string }) => x.id === t.id));
  assert.equal(
    (await site.app.inject({ method: 'GET', url: '/vms', headers: { authorization: `Bearer ${t.token}` } })).statusCode,
    200,
  );
  assert.equal((await site.app.inject({ method: 'DELETE', url: `/tokens/${t.id}`, headers: admin })).statusCode, 200);
  const after = await site.app.inject({ method: 'GET', url: '/vms', headers: { authorization: `Bearer ${t.token}` } });
  assert.equal(after.statusCode, 401);
  // The last admin token cannot be revoked (the site would be unmanageable), nor a site token through /tokens.
  const adminRow = list.json().find((x: { role: string }) => x.role === 'admin');
  const last = await site.app.inject({ method: 'DELETE', url: `/tokens/${adminRow.id}`, headers: admin });
  assert.equal(last.statusCode, 409);
  assert.equal(last.json().error.code, 'TOKEN_IN_USE');
  // A site role cannot be issued here; an unknown role is a 400.
  assert.equal(
    (await site.app.inject({ method: 'POST', url: '/tokens', headers: admin, payload: { name: 'x', role: 'site' } }))
      .statusCode,
    400,
  );
  // An expired token is refused like an unknown one.
  const store = await openSqliteStore(site.paths.database);
  const repo = new TokenRepo(store.handle, (await loadSecretKey(site.paths.secretKey, false)).box);
  const old = await repo.createWithId('old', 'operator', { expiresAt: new Date(Date.now() - 1000).toISOString() });
  await store.close();
  assert.equal(
    (await site.app.inject({ method: 'GET', url: '/vms', headers: { authorization: `Bearer ${old.token}` } }))
      .statusCode,
    401,
  );
});

test('mamori token create|list|revoke through the CLI', async () => {
  const env = { ...process.env, MAMORI_URL: '', MAMORI_TOKEN: '' };
  const url = await site.listen('127.0.0.1', 0);
  const base = ['--url', url, '--token', tokens.admin];
  const caEnv = { ...env, MAMORI_CA: join(site.paths.tlsDir, 'ca-cert.pem') };
  const made = await runCli(
    [...base, 'token', 'create', '--role', 'operator', '--name', 'cli-op', '--expires', '12h'],
    caEnv,
  );
  assert.equal(made.code, 0, made.stderr);
  const secret = made.stdout.trim();
  assert.match(secret, /^mamori_/);
  const list = await runCli([...base, '--json', 'token', 'list'], caEnv);
  const row = (JSON.parse(list.stdout) as { id: string; name: string; role: string }[]).find(
    (x) => x.name === 'cli-op',
  );
  assert.equal(row?.role, 'operator');
  const asOperator = await runCli(['--url', url, '--token', secret, 'token', 'list'], caEnv);
  assert.notEqual(asOperator.code, 0);
  assert.match(asOperator.stderr, /FORBIDDEN/);
  const revoked = await runCli([...base, 'token', 'revoke', 'cli-op'], caEnv);
  assert.equal(revoked.code, 0, revoked.stderr);
  const gone = await runCli(['--url', url, '--token', secret, 'vm', 'list'], caEnv);
  assert.match(gone.stderr, /UNAUTHORIZED/);
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openSite, type Site } from '../../../src/main.js';
import type { AuditEntry, AuditVerification } from '../../../src/audit/audit-log.js';
import { OpenApiCheck } from '../../harness/openapi-check.js';
import { runCli } from '../../harness/site-process.js';

type OpenApiDoc = { paths: Record<string, Record<string, { requestBody?: unknown; security?: unknown[] }>> };

let site: Site;
let dir: string;
let dataDir: string;
let token: string;
let adminId: string;
let doc: OpenApiDoc;
let api: OpenApiCheck;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-audit-'));
  dataDir = join(dir, 'data');
  site = await openSite({ dataDir, name: 'audit-test' });
  token = (await readFile(site.paths.adminToken, 'utf8')).trim();
  doc = (await site.app.inject({ method: 'GET', url: '/openapi.json' })).json() as OpenApiDoc;
  api = new OpenApiCheck(doc);
  // The CLI finds the site through DATA/url.
  await site.listen('127.0.0.1', 0);
  const raw = new BetterSqlite3(site.paths.database, { readonly: true });
  adminId = (raw.prepare("SELECT id FROM tokens WHERE role = 'admin'").get() as { id: string }).id;
  raw.close();
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

async function entries(query = 'limit=1000'): Promise<AuditEntry[]> {
  const res = await site.app.inject({
    method: 'GET',
    url: `/audit?${query}`,
    headers: { authorization: `Bearer ${token}` },
  });
  api.check('GET', '/audit', res.statusCode, res.json());
  assert.equal(res.statusCode, 200);
  return res.json() as AuditEntry[];
}

async function newest(): Promise<number> {
  return (await entries('limit=1'))[0]?.seq ?? 0;
}

async function verify(): Promise<AuditVerification> {
  const res = await site.app.inject({
    method: 'GET',
    url: '/audit/verify',
    headers: { authorization: `Bearer ${token}` },
  });
  api.check('GET', '/audit/verify', res.statusCode, res.json());
  return res.json() as AuditVerification;
}

/** Each route is called with made-up names, so it finds nothing and starts no real work. */
const PARAM_VALUES: Record<string, string> = { kind: 'network' };
/** Routes not called, with the reason (none so far: every mutating route answers fast with made-up input). */
const SKIPPED: Record<string, string> = {};

test('every state-changing route of the OpenAPI document is audited exactly once, naming its route and status', async (t) => {
  const mutating = Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops)
      .filter(([m]) => !['get', 'head', 'options'].includes(m))
      .map(([m, op]) => ({ method: m.toUpperCase(), path, op })),
  );
  assert.ok(mutating.length >= 70, `only ${mutating.length} mutating routes in the document`);
  const called: string[] = [];
  for (const { method, path, op } of mutating) {
    const key = `${method} ${path}`;
    if (key in SKIPPED) continue;
    const params: Record<string, string> = {};
    const url = path.replace(/\{(\w+)\}/g, (_, p: string) => (params[p] = PARAM_VALUES[p] ?? `audit-no-${p}`));
    const before = await newest();
    // A JSON array where an object is expected: refused by validation before any handler runs.
    const started = Date.now();
    const res = await site.app.inject({
      method: method as 'POST',
      url,
      headers: { authorization: `Bearer ${token}`, ...(op.requestBody ? { 'content-type': 'application/json' } : {}) },
      ...(op.requestBody ? { payload: '[]' } : {}),
    });
    assert.ok(res.statusCode < 500, `${key} answered ${res.statusCode}: ${res.body}`);
    const added = (await entries(`limit=10`)).filter((e) => e.seq > before);
    assert.equal(added.length, 1, `${key}: ${added.length} audit entries (answer ${res.statusCode})`);
    const e = added[0]!;
    const isPublic = Array.isArray(op.security) && op.security.length === 0;
    assert.deepEqual(
      {
        method: e.method,
        route: e.route,
        status: e.status,
        target: e.target,
        tokenId: e.tokenId,
        role: e.role,
        source: e.source,
      },
      {
        method,
        route: path.replace(/\{(\w+)\}/g, ':$1'),
        status: res.statusCode,
        target: Object.keys(params).length ? params : null,
        tokenId: isPublic ? null : adminId,
        role: isPublic ? null : 'admin',
        source: '127.0.0.1',
      },
      key,
    );
    const code = res.statusCode >= 400 ? (res.json() as { error: { code: string } }).error.code : null;
    assert.equal(e.errorCode, code, key);
    assert.equal(e.requestId === null, false, key);
    called.push(`${key} ${res.statusCode} ${code ?? ''} ${Date.now() - started} ms`);
  }
  t.diagnostic(`called: ${called.join('; ')}`);
  assert.equal(called.length + Object.keys(SKIPPED).length, mutating.length);
  const v = await verify();
  assert.equal(v.ok, true, JSON.stringify(v.firstBad));
  assert.equal(v.entries, await newest());
});

test('a refused token is recorded for reads too; an unknown route with its path; a success with no error code', async () => {
  const before = await newest();
  const read = await site.app.inject({
    method: 'GET',
    url: '/vms',
    headers: { authorization: 'Bearer mamori_wrong' },
    remoteAddress: '198.51.100.1',
  });
  assert.equal(read.statusCode, 401);
  const none = await site.app.inject({ method: 'DELETE', url: '/vms/web1', remoteAddress: '198.51.100.2' });
  assert.equal(none.statusCode, 401);
  const lost = await site.app.inject({
    method: 'POST',
    url: '/no/such/route?x=1',
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(lost.statusCode, 404);
  const ok = await site.app.inject({ method: 'GET', url: '/vms', headers: { authorization: `Bearer ${token}` } });
  assert.equal(ok.statusCode, 200);
  const set = await site.app.inject({
    method: 'PUT',
    url: '/alerts/webhook',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    payload: JSON.stringify({ url: 'http://127.0.0.1:9/hook' }),
  });
  assert.equal(set.statusCode, 200, set.body);
  const added = (await entries('limit=10')).filter((e) => e.seq > before).reverse();
  assert.deepEqual(
    added.map((e) => [e.method, e.route, e.status, e.errorCode, e.tokenId, e.source, e.target]),
    [
      ['GET', '/vms', 401, 'UNAUTHORIZED', null, '198.51.100.1', null],
      ['DELETE', '/vms/:name', 401, 'UNAUTHORIZED', null, '198.51.100.2', { name: 'web1' }],
      ['POST', '(no route)', 404, 'NOT_FOUND', adminId, '127.0.0.1', { path: '/no/such/route' }],
      ['PUT', '/alerts/webhook', 200, null, adminId, '127.0.0.1', null],
    ],
    'a successful read is not recorded',
  );
});

test('an address that sent 10 wrong tokens gets 429 until the window passes; others are not affected', async () => {
  const before = await newest();
  const from = '203.0.113.7';
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) {
    const res = await site.app.inject({
      method: 'POST',
      url: '/vms',
      remoteAddress: from,
      headers: { authorization: `Bearer mamori_guess${i}`, 'content-type': 'application/json' },
      payload: '{}',
    });
    api.check('POST', '/vms', res.statusCode, res.json());
    statuses.push(res.statusCode);
    if (res.statusCode === 429) {
      const err = (
        res.json() as { error: { code: string; retryable: boolean; details: { retryAfterSeconds: number } } }
      ).error;
      assert.deepEqual([err.code, err.retryable], ['TOO_MANY_AUTH_FAILURES', true]);
      assert.equal(res.headers['retry-after'], String(err.details.retryAfterSeconds));
    }
  }
  assert.deepEqual(statuses, [...Array(10).fill(401), 429, 429]);
  // Even the right token waits: a lucky guess must look like a wrong one.
  const right = await site.app.inject({
    method: 'GET',
    url: '/vms',
    remoteAddress: from,
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(right.statusCode, 429);
  const elsewhere = await site.app.inject({
    method: 'GET',
    url: '/vms',
    remoteAddress: '203.0.113.8',
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(elsewhere.statusCode, 200);
  const added = (await entries('limit=100')).filter((e) => e.seq > before);
  assert.deepEqual(
    added.map((e) => `${e.method} ${e.status} ${e.errorCode}`).reverse(),
    [...Array(10).fill('POST 401 UNAUTHORIZED'), 'POST 429 TOO_MANY_AUTH_FAILURES', 'POST 429 TOO_MANY_AUTH_FAILURES'],
    'the refused read (GET 429) is not recorded',
  );
});

test('an entry edited in the database file, then the newest removed, are reported by GET /audit/verify and mamori audit verify', async () => {
  const list = await runCli(['--data', dataDir, 'audit', 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.ok((JSON.parse(list.stdout) as AuditEntry[]).some((e) => e.route === '/vms/:name/start'));
  const good = await runCli(['--data', dataDir, 'audit', 'verify']);
  assert.equal(good.code, 0, good.stderr);

  const raw = new BetterSqlite3(site.paths.database);
  try {
    // Anyone holding the file can drop the triggers that stop the code; the chain still tells.
    raw.exec('DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;');
    const victim = raw
      .prepare(
        "SELECT seq, status FROM audit_log WHERE route = '/vms/:name' AND method = 'DELETE' ORDER BY seq LIMIT 1",
      )
      .get() as { seq: number; status: number };
    raw.prepare('UPDATE audit_log SET status = 204 WHERE seq = ?').run(victim.seq);
    let v = await verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, victim.seq, 'edited']);
    const cli = await runCli(['--data', dataDir, 'audit', 'verify']);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, new RegExp(`#${victim.seq}\\b`));
    assert.match(cli.stderr, /AUDIT_CHAIN_BROKEN/);

    raw.prepare('UPDATE audit_log SET status = ? WHERE seq = ?').run(victim.status, victim.seq);
    assert.equal((await verify()).ok, true, 'the original value restores the hash');
    const last = await newest();
    raw.prepare('DELETE FROM audit_log WHERE seq = ?').run(last);
    v = await verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, last, 'head-mismatch']);
    const cli2 = await runCli(['--data', dataDir, 'audit', 'verify', '--json']);
    assert.notEqual(cli2.code, 0);
    assert.equal((JSON.parse(cli2.stdout) as AuditVerification).firstBad?.seq, last);
  } finally {
    raw.close();
  }
});

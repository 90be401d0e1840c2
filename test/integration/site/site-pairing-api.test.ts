import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openSite, type Site } from '../../../src/main.js';
import { createLogger } from '../../../src/core/logger.js';
import { pairingKeyFromToken, requestProof } from '../../../src/sites/pairing-proof.js';
import { OpenApiCheck } from '../../harness/openapi-check.js';

/*
 * Pairing through the API: each site is openSite() in this process, serving HTTPS on
 * 127.0.0.1; requests to site-a go through inject() and are checked against the OpenAPI
 * document, while site-a really calls site-b over HTTPS with site-b's CA pinned.
 */

interface Opened {
  site: Site;
  token: string;
  url: string;
  port: number;
}

let dir: string;
let a: Opened;
let b: Opened;
let api: OpenApiCheck;
const logger = createLogger({ level: 'fatal' });

async function open(name: string, port = 0, dataName = name): Promise<Opened> {
  const site = await openSite({ dataDir: join(dir, dataName), name, logger });
  const url = await site.listen('127.0.0.1', port);
  return { site, token: (await readFile(site.paths.adminToken, 'utf8')).trim(), url, port: Number(new URL(url).port) };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-pair-api-'));
  a = await open('site-a');
  b = await open('site-b');
  api = new OpenApiCheck((await a.site.app.inject({ method: 'GET', url: '/openapi.json' })).json());
});
after(async () => {
  await a.site.close();
  await b.site.close();
  await rm(dir, { recursive: true, force: true });
});

type Json = { error: { code: string; message: string; details?: Record<string, unknown> } } & Record<string, unknown>;

async function call(
  on: Opened,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  route: string,
  body?: unknown,
  token: string | null = on.token,
) {
  const res = await on.site.app.inject({
    method,
    url: path,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
  const json = res.body ? (res.json() as Json) : undefined;
  api.check(method, route, res.statusCode, json);
  return { status: res.statusCode, json: json as Json };
}

/** The database as bytes, with its WAL (recent writes live there until a checkpoint). */
async function dbBytes(s: Opened): Promise<Buffer> {
  const parts = await Promise.all(
    [s.site.paths.database, `${s.site.paths.database}-wal`].map((f) => readFile(f).catch(() => Buffer.alloc(0))),
  );
  return Buffer.concat(parts);
}

/** The token site-b issued to site-a, as site-a reads it back (the database keeps it sealed). */
async function storedSiteToken(): Promise<string | undefined> {
  return (await a.site.peers.record('site-b').catch(() => undefined))?.token ?? undefined;
}

/** How many site-to-site tokens a site has issued and not revoked. */
function siteTokens(s: Opened): number {
  const db = new BetterSqlite3(s.site.paths.database, { readonly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM tokens WHERE role = 'site'").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

const peersOf = async (s: Opened) =>
  (await call(s, 'GET', '/sites?check=false', '/sites')).json as unknown as { name: string; direction: string }[];

test('GET /site/ca is public and names the CA the server certificate chains to', async () => {
  const r = await call(a, 'GET', '/site/ca', '/site/ca', undefined, null);
  assert.equal(r.status, 200);
  assert.equal(r.json['name'], 'site-a');
  assert.equal(r.json['fingerprint'], a.site.tls.caFingerprint);
  assert.match(String(r.json['caCertPem']), /BEGIN CERTIFICATE/);
});

test('a wrong admin token, a wrong fingerprint, plain HTTP, itself or a dead URL pair nothing on either side', async () => {
  const wrong = await call(a, 'POST', '/sites', '/sites', { url: b.url, token: 'mamori_not-the-token' });
  assert.equal(wrong.status, 403);
  assert.equal(wrong.json.error.code, 'PEER_AUTH_FAILED');
  assert.match(wrong.json.error.message, /not that site's admin token/);

  const fp = await call(a, 'POST', '/sites', '/sites', { url: b.url, token: b.token, fingerprint: 'ab'.repeat(32) });
  assert.equal(fp.status, 502);
  assert.equal(fp.json.error.code, 'PEER_CERT_MISMATCH');

  const plain = await call(a, 'POST', '/sites', '/sites', { url: b.url.replace('https:', 'http:'), token: b.token });
  assert.equal(plain.status, 400);
  const self = await call(a, 'POST', '/sites', '/sites', { url: a.url, token: a.token });
  assert.equal(self.status, 400);
  assert.match(self.json.error.message, /this site itself/);

  const t0 = Date.now();
  const dead = await call(a, 'POST', '/sites', '/sites', { url: 'https://127.0.0.1:1', token: b.token });
  assert.equal(dead.status, 503);
  assert.equal(dead.json.error.code, 'PEER_UNREACHABLE');
  assert.ok(Date.now() - t0 < 5_000);

  const twin = await open('site-a', 0, 'twin');
  try {
    const same = await call(a, 'POST', '/sites', '/sites', { url: twin.url, token: twin.token, name: 'twin' });
    assert.equal(same.status, 400);
    assert.match(same.json.error.message, /both sites are named site-a/);
  } finally {
    await twin.site.close();
  }

  assert.deepEqual(await peersOf(a), []);
  assert.deepEqual(await peersOf(b), []);
  assert.equal(siteTokens(b), 0, 'site-b issued no token');
});

test('a pairing request that saw another CA (a man in the middle) is refused by the peer even with a valid proof', async () => {
  const fake = 'CC:'.repeat(31) + 'CC';
  const nonce = randomBytes(32).toString('base64url');
  const body = {
    name: 'site-a',
    caCertPem: a.site.tls.caCertPem,
    peerFingerprint: fake,
    nonce,
    proof: requestProof(pairingKeyFromToken(b.token), {
      peerFingerprint: fake,
      callerFingerprint: a.site.tls.caFingerprint,
      callerName: 'site-a',
      nonce,
    }),
  };
  const r = await b.site.app.inject({
    method: 'POST',
    url: '/site/pairing',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify(body),
  });
  assert.equal(r.statusCode, 502);
  assert.equal(r.json().error.code, 'PEER_CERT_MISMATCH');
  assert.deepEqual(await peersOf(b), []);
});

test('pairing both ways, with and without --fingerprint; site tokens cannot manage pairings', async () => {
  const ab = await call(a, 'POST', '/sites', '/sites', {
    url: b.url,
    token: b.token,
    fingerprint: b.site.tls.caFingerprint.replace(/:/g, '').toLowerCase(),
  });
  assert.equal(ab.status, 201, JSON.stringify(ab.json));
  assert.equal(ab.json['name'], 'site-b');
  assert.equal(ab.json['fingerprint'], b.site.tls.caFingerprint);
  assert.equal(ab.json['direction'], 'outbound');
  assert.equal((ab.json['status'] as { state: string }).state, 'reachable');
  assert.deepEqual(
    (await peersOf(b)).map((p) => [p.name, p.direction]),
    [['site-a', 'inbound']],
  );

  const ba = await call(b, 'POST', '/sites', '/sites', { url: a.url, token: a.token });
  assert.equal(ba.status, 201, JSON.stringify(ba.json));
  assert.equal(ba.json['direction'], 'both');
  const list = (await call(a, 'GET', '/sites', '/sites')).json as unknown as {
    name: string;
    direction: string;
    status: { state: string; clockOffsetMs: number; rttMs: number };
  }[];
  assert.equal(list.length, 1);
  assert.equal(list[0]!.direction, 'both');
  assert.equal(list[0]!.status.state, 'reachable');
  assert.ok(Math.abs(list[0]!.status.clockOffsetMs) < 1_000);

  const ping = await call(a, 'GET', '/sites/site-b/ping', '/sites/{name}/ping');
  assert.equal(ping.status, 200);
  assert.equal(ping.json['knownThereAs'], 'site-a');

  // The admin token never reaches a database; the site token site-a got is a 'site' token on site-b.
  for (const s of [a, b]) {
    const db = await dbBytes(s);
    assert.ok(
      !db.includes(Buffer.from(a.token)) && !db.includes(Buffer.from(b.token)),
      'no admin token in clear in any database',
    );
  }
  const siteToken = await storedSiteToken();
  assert.ok(siteToken, 'site-a keeps the token site-b issued');
  assert.ok(!(await dbBytes(a)).includes(Buffer.from(siteToken)), 'site-a keeps it sealed, not in clear');
  const forbidden = await call(b, 'GET', '/sites', '/sites', undefined, siteToken);
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.json.error.code, 'FORBIDDEN');
  const who = await call(b, 'GET', '/site/pairing', '/site/pairing', undefined, siteToken);
  assert.equal(who.json['you'], 'site-a');
  const adminOnPeerRoute = await call(b, 'GET', '/site/pairing', '/site/pairing');
  assert.equal(adminOnPeerRoute.status, 403);
});

test('pairing again is idempotent and revokes the token issued before', async () => {
  const before = await storedSiteToken();
  assert.ok(before);
  const again = await call(a, 'POST', '/sites', '/sites', { url: b.url, token: b.token });
  assert.equal(again.status, 201);
  assert.equal((await peersOf(a)).length, 1);
  assert.equal((await peersOf(b)).length, 1);
  assert.notEqual(await storedSiteToken(), before);
  const old = await call(b, 'GET', '/site/pairing', '/site/pairing', undefined, before);
  assert.equal(old.status, 401, 'the previous site token is revoked');
  assert.equal((await call(a, 'GET', '/sites/site-b/ping', '/sites/{name}/ping')).status, 200);
});

test('a peer that comes back with another CA is refused: PEER_CERT_MISMATCH, naming both fingerprints', async () => {
  const oldFp = b.site.tls.caFingerprint;
  await b.site.close();
  const impostor = await open('site-b', b.port, 'site-b-reinstalled');
  try {
    const listed = (await call(a, 'GET', '/sites', '/sites')).json as unknown as {
      status: { state: string; error: { code: string } };
    }[];
    assert.equal(listed[0]!.status.state, 'cert-mismatch');
    assert.equal(listed[0]!.status.error.code, 'PEER_CERT_MISMATCH');
    const ping = await call(a, 'GET', '/sites/site-b/ping', '/sites/{name}/ping');
    assert.equal(ping.status, 502);
    assert.equal(ping.json.error.code, 'PEER_CERT_MISMATCH');
    assert.equal(ping.json.error.details?.['expectedFingerprint'], oldFp);
    assert.equal(ping.json.error.details?.['presentedFingerprint'], impostor.site.tls.caFingerprint);
    // Pairing again under the same name is refused too, until the old pairing is removed.
    const repair = await call(a, 'POST', '/sites', '/sites', { url: impostor.url, token: impostor.token });
    assert.equal(repair.status, 502);
    assert.equal(repair.json.error.code, 'PEER_CERT_MISMATCH');
  } finally {
    await impostor.site.close();
    b = await open('site-b', b.port);
  }
});

test('unpair removes the pairing on both sides and revokes the tokens; unknown names are PEER_NOT_FOUND', async () => {
  const r = await call(a, 'DELETE', '/sites/site-b', '/sites/{name}');
  assert.equal(r.status, 200);
  assert.equal(r.json['peerNotified'], true);
  assert.deepEqual(await peersOf(a), []);
  assert.deepEqual(await peersOf(b), []);
  assert.equal(siteTokens(a), 0);
  assert.equal(siteTokens(b), 0);
  const missing = await call(a, 'GET', '/sites/site-b', '/sites/{name}');
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, 'PEER_NOT_FOUND');
});

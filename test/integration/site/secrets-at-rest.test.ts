import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openSite, type Site } from '../../../src/main.js';
import { createLogger } from '../../../src/core/logger.js';
import { requestProof } from '../../../src/sites/pairing-proof.js';
import { PeerClient } from '../../../src/sites/peer-client.js';
import { repoRoot } from '../../harness/repo-root.js';

/*
 * "The database alone is no credential" (DESIGN.md, least privilege). Two sites are paired
 * both ways; site-a gets an alert webhook with a password and a storage array entry with a
 * secret connection value. Then an attacker copies ONLY mamori.db (after a checkpoint) and
 * tries everything in it: every value of the tokens table as a bearer token, and as the key
 * of a pairing proof (the stored hash was that key before secrets were sealed). Every try is
 * refused, and no secret is in the copied bytes.
 */

interface Opened {
  site: Site;
  token: string;
  url: string;
}

const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');
const WEBHOOK_PASSWORD = `pw-${randomBytes(9).toString('hex')}`;
const WEBHOOK_QUERY_TOKEN = `qt-${randomBytes(9).toString('hex')}`;
const ARRAY_PASSWORD = `ap-${randomBytes(9).toString('hex')}`;
const logger = createLogger({ level: 'fatal' });
let dir: string;
let a: Opened;
let b: Opened;

async function open(name: string): Promise<Opened> {
  const site = await openSite({ dataDir: join(dir, name), name, logger });
  const url = await site.listen('127.0.0.1', 0);
  return { site, token: (await readFile(site.paths.adminToken, 'utf8')).trim(), url };
}

async function call(on: Opened, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown, token: string | null = on.token) {
  const res = await on.site.app.inject({
    method, url: path,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
  return { status: res.statusCode, json: (res.body ? res.json() : undefined) as Record<string, unknown> & { error: { code: string; message: string } } };
}

/** What the attacker walks away with: a copy of mamori.db alone, after the WAL was folded into it. */
async function stealDatabase(s: Opened, into: string): Promise<string> {
  const live = new BetterSqlite3(s.site.paths.database);
  try {
    live.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    live.close();
  }
  await mkdir(into, { recursive: true });
  const copy = join(into, 'mamori.db');
  await copyFile(s.site.paths.database, copy);
  return copy;
}

/** Every text value of every row of the tokens table (hash, and whatever else it keeps). */
function tokenTableValues(file: string): string[] {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    const rows = db.prepare('SELECT * FROM tokens').all() as Record<string, unknown>[];
    return rows.flatMap((r) => Object.values(r).filter((v): v is string => typeof v === 'string' && v.length >= 16));
  } finally {
    db.close();
  }
}

/** Pairing keys an attacker can make from a stored value: the value as hex (the v1 key), as bytes, and hashed like a token. */
function candidateKeys(value: string): Buffer[] {
  const keys = [Buffer.from(value, 'utf8'), createHash('sha256').update(value, 'utf8').digest()];
  if (/^[0-9a-f]{64}$/i.test(value)) keys.push(Buffer.from(value, 'hex'));
  const b64 = value.replace(/^[a-z0-9]+:/, '');
  if (/^[A-Za-z0-9+/=_-]+$/.test(b64)) keys.push(Buffer.from(b64, 'base64'));
  return keys;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-secrets-'));
  a = await open('site-a');
  b = await open('site-b');
  const ab = await call(a, 'POST', '/sites', { url: b.url, token: b.token });
  assert.equal(ab.status, 201, JSON.stringify(ab.json));
  const ba = await call(b, 'POST', '/sites', { url: a.url, token: a.token });
  assert.equal(ba.status, 201, JSON.stringify(ba.json));
  const hook = await call(a, 'PUT', '/alerts/webhook', { url: `https://alerts:${WEBHOOK_PASSWORD}@127.0.0.1:9/hook?token=${WEBHOOK_QUERY_TOKEN}&team=dr` });
  assert.equal(hook.status, 200, JSON.stringify(hook.json));
  const arr = await call(a, 'POST', '/arrays', { name: 'lab', adapter: FAULT, connection: { fault: 'none', password: ARRAY_PASSWORD } });
  assert.equal(arr.status, 201, JSON.stringify(arr.json));
});

after(async () => {
  await a?.site.close();
  await b?.site.close();
  await rm(dir, { recursive: true, force: true });
});

test('the database alone: no stored value is a bearer token or a pairing key, and no secret is in its bytes', async () => {
  for (const s of [a, b]) {
    const name = s.site.paths.root.endsWith('site-a') ? 'site-a' : 'site-b';
    const stolen = await stealDatabase(s, join(dir, `attacker-${name}`));
    const values = tokenTableValues(stolen);
    assert.ok(values.length >= 2, `${name}: the tokens table has rows to try`);

    for (const v of values) {
      const r = await call(s, 'GET', '/vms', undefined, v);
      assert.equal(r.status, 401, `${name}: a stored value used as a bearer token`);
    }

    // The attacker pairs as a fake site over real HTTPS. Its CA here is the other site's, which
    // the target already pinned: a proof that passed would be answered with a fresh site token.
    const other = s === a ? b : a;
    const client = new PeerClient({ name, url: s.url, caCertPem: s.site.tls.caCertPem, caFingerprint: s.site.tls.caFingerprint, token: null });
    for (const v of values) {
      for (const key of candidateKeys(v)) {
        const nonce = randomBytes(32).toString('base64url');
        const fields = { peerFingerprint: s.site.tls.caFingerprint, callerFingerprint: other.site.tls.caFingerprint, callerName: 'intruder', nonce };
        const body = { name: 'intruder', caCertPem: other.site.tls.caCertPem, peerFingerprint: fields.peerFingerprint, nonce, proof: requestProof(key, fields) };
        await assert.rejects(client.request('POST', '/site/pairing', body, { auth: false }), (e: unknown) => {
          assert.equal((e as { code?: string }).code, 'PEER_AUTH_FAILED', `${name}: a pairing proof keyed by a stored value: ${String(e)}`);
          return true;
        });
      }
    }

    const bytes = await readFile(stolen);
    const secrets: [string, string][] = [[`the admin token of ${name}`, s.token]];
    if (s === a) {
      const siteToken = (await a.site.peers.record('site-b')).token;
      assert.ok(siteToken, 'site-a holds the token site-b issued it');
      secrets.push(['the site token site-b issued', siteToken], ['the webhook password', WEBHOOK_PASSWORD], ['the webhook query token', WEBHOOK_QUERY_TOKEN], ['the array password', ARRAY_PASSWORD]);
    } else {
      const siteToken = (await b.site.peers.record('site-a')).token;
      assert.ok(siteToken, 'site-b holds the token site-a issued it');
      secrets.push(['the site token site-a issued', siteToken]);
    }
    for (const [what, secret] of secrets) assert.equal(bytes.indexOf(Buffer.from(secret, 'utf8')), -1, `${name}: ${what} is in the database bytes`);
  }
});

test('pairing still works after all that: the real admin token pairs', async () => {
  const again = await call(a, 'POST', '/sites', { url: b.url, token: b.token });
  assert.equal(again.status, 201, JSON.stringify(again.json));
});

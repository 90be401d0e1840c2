import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openSite, type Site } from '../../../src/main.js';
import { createLogger } from '../../../src/core/logger.js';
import { requestProof } from '../../../src/sites/pairing-proof.js';
import { PeerClient } from '../../../src/sites/peer-client.js';
import { repoRoot } from '../../harness/repo-root.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

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
// (Port 9, discard: nothing answers there; no incident is raised in this test, so nothing is posted.)
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

async function call(
  on: Opened,
  method: 'GET' | 'POST' | 'PUT',
  path: string,
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
  return {
    status: res.statusCode,
    json: (res.body ? res.json() : undefined) as Record<string, unknown> & { error: { code: string; message: string } },
  };
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
  const hook = await call(a, 'PUT', '/alerts/webhook', {
    url: `https://alerts:${WEBHOOK_PASSWORD}@127.0.0.1:9/hook?token=${WEBHOOK_QUERY_TOKEN}&team=dr#frag`,
  });
  assert.equal(hook.status, 200, JSON.stringify(hook.json));
  const arr = await call(a, 'POST', '/arrays', {
    name: 'lab',
    adapter: FAULT,
    connection: { fault: 'none', password: ARRAY_PASSWORD },
  });
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
    const client = new PeerClient({
      name,
      url: s.url,
      caCertPem: s.site.tls.caCertPem,
      caFingerprint: s.site.tls.caFingerprint,
      token: null,
    });
    for (const v of values) {
      for (const key of candidateKeys(v)) {
        const nonce = randomBytes(32).toString('base64url');
        const fields = {
          peerFingerprint: s.site.tls.caFingerprint,
          callerFingerprint: other.site.tls.caFingerprint,
          callerName: 'intruder',
          nonce,
        };
        const body = {
          name: 'intruder',
          caCertPem: other.site.tls.caCertPem,
          peerFingerprint: fields.peerFingerprint,
          nonce,
          proof: requestProof(key, fields),
        };
        await assert.rejects(client.request('POST', '/site/pairing', body, { auth: false }), (e: unknown) => {
          assert.equal(
            (e as { code?: string }).code,
            'PEER_AUTH_FAILED',
            `${name}: a pairing proof keyed by a stored value: ${String(e)}`,
          );
          return true;
        });
      }
    }

    const bytes = await readFile(stolen);
    const secrets: [string, string][] = [[`the admin token of ${name}`, s.token]];
    if (s === a) {
      const siteToken = (await a.site.peers.record('site-b')).token;
      assert.ok(siteToken, 'site-a holds the token site-b issued it');
      secrets.push(
        ['the site token site-b issued', siteToken],
        ['the webhook password', WEBHOOK_PASSWORD],
        ['the webhook query token', WEBHOOK_QUERY_TOKEN],
        ['the array password', ARRAY_PASSWORD],
      );
    } else {
      const siteToken = (await b.site.peers.record('site-a')).token;
      assert.ok(siteToken, 'site-b holds the token site-a issued it');
      secrets.push(['the site token site-a issued', siteToken]);
    }
    for (const [what, secret] of secrets)
      assert.equal(bytes.indexOf(Buffer.from(secret, 'utf8')), -1, `${name}: ${what} is in the database bytes`);
  }
});

test('GET /alerts shows the webhook URL masked: userinfo, query values and fragment', async () => {
  const r = await call(a, 'GET', '/alerts');
  assert.equal(r.status, 200);
  assert.equal((r.json['webhook'] as { url: string }).url, 'https://***@127.0.0.1:9/hook?token=***&team=***');
  assert.ok(
    !JSON.stringify(r.json).includes(WEBHOOK_PASSWORD) && !JSON.stringify(r.json).includes(WEBHOOK_QUERY_TOKEN),
  );
  const arrays = await call(a, 'GET', '/arrays');
  assert.ok(!JSON.stringify(arrays.json).includes(ARRAY_PASSWORD), 'the array password is not shown either');
  assert.match(JSON.stringify(arrays.json), /"fault":"none"/, 'the entry still opens: its connection reads back');
});

test('pairing still works after all that: the real admin token pairs', async () => {
  const again = await call(a, 'POST', '/sites', { url: b.url, token: b.token });
  assert.equal(again.status, 201, JSON.stringify(again.json));
});

/** Every path under a folder with its permission bits. */
async function modes(root: string): Promise<{ path: string; dir: boolean; mode: number }[]> {
  const out: { path: string; dir: boolean; mode: number }[] = [];
  for (const name of await readdir(root)) {
    const path = join(root, name);
    const st = await lstat(path);
    if (st.isSymbolicLink()) continue;
    out.push({ path, dir: st.isDirectory(), mode: st.mode & 0o777 });
    if (st.isDirectory()) out.push(...(await modes(path)));
  }
  return out;
}

test('a data folder is 0700 and everything the site made in it (database, -wal, keys, tokens, a qemu-img image) is private', async () => {
  const disk = await call(a, 'POST', '/disks', { name: 'private', size: '8M' });
  assert.equal(disk.status, 201, JSON.stringify(disk.json));
  const root = a.site.paths.root;
  assert.equal((await lstat(root)).mode & 0o777, 0o700);
  const all = await modes(root);
  for (const f of ['mamori.db', 'mamori.db-wal', 'secret.key', 'admin-token', 'url', 'tls/ca-key.pem']) {
    assert.ok(
      all.some((e) => e.path === join(root, f)),
      `${f} exists`,
    );
  }
  assert.ok(
    all.some((e) => e.path.endsWith('.qcow2') || e.path.includes('private')),
    'the disk image is there',
  );
  const open = all.filter((e) => (e.mode & 0o077) !== 0).map((e) => `${e.path} ${e.mode.toString(8)}`);
  assert.deepEqual(open, [], 'nothing in the data folder is open to group or others');
  assert.equal((await lstat(a.site.paths.secretKey)).size, 32);
});

test('serve refuses a data folder or a database others can read, printing the chmod; a lost key with sealed values is SECRET_KEY_MISSING, a wrong one SECRET_UNREADABLE', async () => {
  const loose = join(dir, 'loose');
  await mkdir(loose);
  await chmod(loose, 0o755);
  await assert.rejects(openSite({ dataDir: loose, name: 'site-c', logger }), (e: unknown) => {
    assert.ok(isMamoriError(e, 'DATA_DIR_UNSAFE'), String(e));
    assert.ok(e.message.endsWith(`Run: chmod 700 ${loose}`), e.message);
    return true;
  });
  assert.deepEqual(await readdir(loose), [], 'nothing was made in it');

  const cDir = join(dir, 'site-c');
  const c = await openSite({ dataDir: cDir, name: 'site-c', logger });
  await c.close();
  await chmod(join(cDir, 'mamori.db'), 0o644);
  await assert.rejects(
    openSite({ dataDir: cDir, name: 'site-c', logger }),
    (e: unknown) =>
      isMamoriError(e, 'DATA_DIR_UNSAFE') && e.message.endsWith(`Run: chmod 600 ${join(cDir, 'mamori.db')}`),
  );
  await chmod(join(cDir, 'mamori.db'), 0o600);

  const key = await readFile(join(cDir, 'secret.key'));
  await rm(join(cDir, 'secret.key'));
  await assert.rejects(
    openSite({ dataDir: cDir, name: 'site-c', logger }),
    (e: unknown) => isMamoriError(e, 'SECRET_KEY_MISSING') && /restore .*secret\.key from your backup/.test(e.message),
  );
  // Another site's key (or one from another backup) opens nothing here: refused at start.
  await writeFile(join(cDir, 'secret.key'), randomBytes(32), { mode: 0o600 });
  await assert.rejects(
    openSite({ dataDir: cDir, name: 'site-c', logger }),
    (e: unknown) =>
      isMamoriError(e, 'SECRET_UNREADABLE') &&
      /Restore the key and the database from the same backup|Restore both from the same backup/.test(e.message),
  );
  await writeFile(join(cDir, 'secret.key'), key, { mode: 0o600 });
  const back = await openSite({ dataDir: cDir, name: 'site-c', logger });
  await back.close();
});

test('upgrade: a database from before sealing gets its admin pairing key from DATA/admin-token, and clear peer tokens sealed', async () => {
  const cDir = join(dir, 'site-old');
  const c = await openSite({ dataDir: cDir, name: 'site-old', logger });
  await c.close();
  const clearToken = `mamori_${randomBytes(24).toString('base64url')}`;
  const raw = new BetterSqlite3(join(cDir, 'mamori.db'));
  try {
    raw.prepare('UPDATE tokens SET pairing_key = NULL').run();
    raw
      .prepare(
        `INSERT INTO peers (id, name, url, ca_cert_pem, ca_fingerprint, token, inbound_token_id, created_at, updated_at)
      VALUES ('peer_old', 'site-far', 'https://127.0.0.1:1', 'pem', 'AA', ?, NULL, 'now', 'now')`,
      )
      .run(clearToken);
  } finally {
    raw.close();
  }
  const reopened = await openSite({ dataDir: cDir, name: 'site-old', logger });
  try {
    assert.equal((await reopened.peers.record('site-far')).token, clearToken, 'the peer token still reads back');
  } finally {
    await reopened.close();
  }
  const check = new BetterSqlite3(join(cDir, 'mamori.db'), { readonly: true });
  try {
    const keyed = check.prepare("SELECT pairing_key FROM tokens WHERE role = 'admin'").all() as {
      pairing_key: string | null;
    }[];
    assert.ok(
      keyed.length > 0 && keyed.every((r) => r.pairing_key?.startsWith('sb1:')),
      'the admin token got its sealed pairing key',
    );
    const stored = (check.prepare("SELECT token FROM peers WHERE id = 'peer_old'").get() as { token: string }).token;
    assert.ok(stored.startsWith('sb1:') && !stored.includes(clearToken), 'the clear peer token was sealed');
  } finally {
    check.close();
  }
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSite, type Site } from '../../../src/main.js';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { TokenRepo } from '../../../src/store/repos/token-repo.js';
import { loadSecretKey } from '../../../src/core/secret-box.js';

/*
 * The reproductions of issue 18 that a hostile caller made with nothing but the API, each
 * now a test: a site token mapped /etc/shadow as an RDM (201) and created a VM with it; a
 * symlink to it, the site's CA key and its database were mapped too; `disk import` of the CA
 * key with a site token copied it into a 0644 qcow2; /etc/./shadow and //etc/shadow got past
 * "already mapped"; a missing path answered 404 and /dev/null 422; a 900 KB name came back
 * twice in the error; the console had no CSP, X-Frame-Options or nosniff.
 */

let site: Site;
let dir: string;
let admin: string;
let siteToken: string;
const luns = () => join(dir, 'luns');

before(async () => {
  process.env['MAMORI_ACCEL'] = 'tcg';
  dir = await mkdtemp(join(tmpdir(), 'mamori-hostile-'));
  await mkdir(luns());
  // Raw files may be RDMs where the admin allows them: this folder, by an explicit device glob.
  site = await openSite({
    dataDir: join(dir, 'data'),
    name: 'hostile',
    hostPaths: { devices: [`${luns()}/*`, '/dev/**'], importDirs: [join(dir, 'in')] },
  });
  admin = (await readFile(site.paths.adminToken, 'utf8')).trim();
  const store = await openSqliteStore(site.paths.database);
  siteToken = await new TokenRepo(store.handle, (await loadSecretKey(site.paths.secretKey, false)).box).create(
    'site:peer',
    'site',
  );
  await store.close();
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

const post = (token: string, url: string, payload: unknown) =>
  site.app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    payload: JSON.stringify(payload),
  });

test('a site token maps no host file and imports nothing', async () => {
  for (const device of ['/etc/shadow', join(site.paths.tlsDir, 'ca-key.pem'), site.paths.database]) {
    const r = await post(siteToken, '/disks', { name: 'stolen', rdm: { device } });
    assert.equal(r.statusCode, 403, device);
    assert.equal(r.json().error.code, 'FORBIDDEN');
  }
  const imp = await post(siteToken, '/disks/import', { name: 'key', source: join(site.paths.tlsDir, 'ca-key.pem') });
  assert.equal(imp.statusCode, 403);
  assert.equal(
    (await site.app.inject({ method: 'GET', url: '/disks', headers: { authorization: `Bearer ${admin}` } })).json()
      .length,
    0,
  );
});

test('even an admin maps no file outside the allow-list, nothing in the data folder, and a missing path looks the same', async () => {
  await symlink('/etc/shadow', join(luns(), 'shadow-link'));
  await symlink(join(site.paths.tlsDir, 'ca-key.pem'), join(luns(), 'key-link'));
  const answers: string[] = [];
  for (const device of [
    '/etc/shadow',
    '/etc/./shadow',
    '//etc/shadow',
    join(luns(), 'shadow-link'),
    join(luns(), 'key-link'),
    join(site.paths.tlsDir, 'ca-key.pem'),
    site.paths.database,
    site.paths.secretKey,
    '/dev/null',
    join(luns(), 'missing.raw'),
  ]) {
    const r = await post(admin, '/disks', { name: 'x', rdm: { device } });
    assert.equal(r.statusCode, 403, device);
    assert.equal(r.json().error.code, 'HOST_PATH_REFUSED', device);
    answers.push(r.json().error.message.replace(JSON.stringify(device), 'PATH'));
  }
  assert.equal(new Set(answers).size, 1, 'missing, forbidden, a char device and the data folder: one answer');
  const imp = await post(admin, '/disks/import', { name: 'key', source: join(site.paths.tlsDir, 'ca-key.pem') });
  assert.equal(imp.json().error.code, 'HOST_PATH_REFUSED');
});

test('"already mapped" is the same file however it is named: a symlink, a hard link, odd spellings', async () => {
  const lun = join(luns(), 'lun0.raw');
  await writeFile(lun, Buffer.alloc(1024 * 1024));
  await symlink(lun, join(luns(), 'lun0-link'));
  await link(lun, join(luns(), 'lun0-hard.raw'));
  const first = await post(admin, '/disks', { name: 'lun0', rdm: { device: lun } });
  assert.equal(first.statusCode, 201, first.body);
  assert.equal(first.json().path, lun, 'the canonical path is what is stored');
  for (const [i, device] of [
    join(luns(), 'lun0-link'),
    join(luns(), 'lun0-hard.raw'),
    `${luns()}/./lun0.raw`,
    `/${lun}`,
  ].entries()) {
    const again = await post(admin, '/disks', { name: `lun0-again${i}`, rdm: { device } });
    assert.equal(again.statusCode, 409, device);
    assert.equal(again.json().error.code, 'DISK_EXISTS');
  }
  // Shared on both sides, a second mapping is what a guest cluster needs.
  const shared = join(luns(), 'quorum.raw');
  await writeFile(shared, Buffer.alloc(1024 * 1024));
  assert.equal((await post(admin, '/disks', { name: 'q1', rdm: { device: shared }, shared: true })).statusCode, 201);
  assert.equal(
    (await post(admin, '/disks', { name: 'q2', rdm: { device: join(luns(), '.', 'quorum.raw') }, shared: true }))
      .statusCode,
    201,
  );
});

test('a 900 KB name is refused with a small answer that quotes a little of it', async () => {
  const name = 'n'.repeat(900_000);
  for (const url of ['/vms', '/disks']) {
    const r = await post(admin, url, { name, size: '1M' });
    assert.ok(r.statusCode >= 400 && r.statusCode < 500, `${url}: ${r.statusCode}`);
    assert.ok(r.body.length < 2048, `${url} answered ${r.body.length} bytes`);
  }
});

test('every answer, the console first, carries CSP, X-Frame-Options DENY, nosniff and a referrer policy', async () => {
  for (const url of ['/ui/', '/health', '/vms']) {
    const r = await site.app.inject({ method: 'GET', url });
    assert.match(String(r.headers['content-security-policy']), /script-src 'self'/, url);
    assert.match(String(r.headers['content-security-policy']), /frame-ancestors 'none'/, url);
    assert.equal(r.headers['x-frame-options'], 'DENY', url);
    assert.equal(r.headers['x-content-type-options'], 'nosniff', url);
    assert.equal(r.headers['referrer-policy'], 'no-referrer', url);
  }
});

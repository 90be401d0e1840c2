import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SecretBox, isSealed, loadSecretKey } from '../../../src/core/secret-box.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { maskUrl } from '../../../src/core/mask-url.js';

const unreadable = (e: unknown): boolean => isMamoriError(e, 'SECRET_UNREADABLE');

test('a sealed value opens with its key and purpose, and shows nothing of the value', () => {
  const box = new SecretBox(randomBytes(32));
  const sealed = box.seal('peers.token:peer_1', 'mamori_the-site-token');
  assert.ok(isSealed(sealed));
  assert.match(sealed, /^sb1:[A-Za-z0-9+/]+=*$/);
  assert.ok(!sealed.includes('the-site-token'));
  assert.equal(box.openString('peers.token:peer_1', sealed), 'mamori_the-site-token');
  assert.notEqual(box.seal('peers.token:peer_1', 'mamori_the-site-token'), sealed, 'a fresh nonce each time');
  assert.deepEqual(box.open('k', box.seal('k', Buffer.from([0, 1, 2]))), Buffer.from([0, 1, 2]));
  assert.equal(box.openOrClear('k', 'from-before-sealing'), 'from-before-sealing');
});

test('a tampered value, another purpose, or another key is a typed error', () => {
  const box = new SecretBox(randomBytes(32));
  const sealed = box.seal('peers.token:peer_1', 'secret');
  const raw = Buffer.from(sealed.slice(4), 'base64');
  raw[14] = raw[14]! ^ 1;
  assert.throws(() => box.open('peers.token:peer_1', `sb1:${raw.toString('base64')}`), unreadable);
  assert.throws(() => box.open('peers.token:peer_2', sealed), unreadable, 'moved to another row');
  assert.throws(() => box.open('storage_arrays.connection:lab', sealed), unreadable, 'moved to another column');
  assert.throws(() => new SecretBox(randomBytes(32)).open('peers.token:peer_1', sealed), unreadable);
  assert.throws(() => box.open('peers.token:peer_1', 'sb1:AAAA'), unreadable);
  assert.throws(() => box.open('peers.token:peer_1', 'clear'), unreadable);
});

test('the key file: made 0600 when allowed, read back, and its absence is SECRET_KEY_MISSING when values are sealed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-key-'));
  try {
    const file = join(dir, 'secret.key');
    await assert.rejects(
      loadSecretKey(file, false),
      (e: unknown) =>
        isMamoriError(e, 'SECRET_KEY_MISSING') && /restore .*secret\.key from your backup/.test((e as Error).message),
    );
    const made = await loadSecretKey(file, true);
    assert.equal(made.created, true);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(file)).size, 32);
    const sealed = made.box.seal('p', 'v');
    const again = await loadSecretKey(file, false);
    assert.equal(again.created, false);
    assert.equal(again.box.openString('p', sealed), 'v');
    await writeFile(file, 'short');
    await assert.rejects(loadSecretKey(file, true), unreadable);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('URLs are shown with userinfo, query values and fragment masked', () => {
  assert.equal(
    maskUrl('https://user:pw@host.example/path?token=abc&team=dr#x'),
    'https://***@host.example/path?token=***&team=***',
  );
  assert.equal(maskUrl('https://host.example:8443/path'), 'https://host.example:8443/path');
  assert.equal(maskUrl('http://host/p?bare&k='), 'http://host/p?***&k=***');
  assert.equal(maskUrl('not a url user:pw@x?token=s3cret#f'), '***@x?token=***');
});

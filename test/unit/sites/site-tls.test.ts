import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureSiteTls, serverNamesFor } from '../../../src/sites/site-tls.js';
import { TLS_FILES } from '../../../src/sites/site-ca.js';
import { writeQemuTlsCreds } from '../../../src/sites/qemu-tls-creds.js';
import { runProcess } from '../../../src/core/run-process.js';

const root = await mkdtemp(join(tmpdir(), 'mamori-tls-'));
after(() => rm(root, { recursive: true, force: true }));

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

async function text(cert: string, ext: string): Promise<string> {
  return (await runProcess('openssl', ['x509', '-in', cert, '-noout', '-ext', ext])).stdout;
}

test('first start makes a CA, a server and a client certificate that openssl verifies, keys 0600', async () => {
  const dir = join(root, 'first');
  const tls = await ensureSiteTls({ dir, siteName: 'site-a', serverNames: serverNamesFor(['10.213.0.1']) });
  assert.deepEqual(tls.created, ['ca', 'server', 'client']);
  assert.equal(await mode(dir), 0o700);
  for (const k of [TLS_FILES.caKey, TLS_FILES.serverKey, TLS_FILES.clientKey])
    assert.equal(await mode(join(dir, k)), 0o600, k);
  for (const c of [TLS_FILES.serverCert, TLS_FILES.clientCert]) {
    const v = await runProcess('openssl', ['verify', '-CAfile', join(dir, TLS_FILES.caCert), join(dir, c)]);
    assert.match(v.stdout, /: OK/);
  }
  // The server certificate names loopback and the listen address; each leaf has its one purpose.
  const san = await text(join(dir, TLS_FILES.serverCert), 'subjectAltName');
  for (const want of ['DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:10.213.0.1'])
    assert.ok(san.includes(want), `${want} in ${san}`);
  assert.match(await text(join(dir, TLS_FILES.serverCert), 'extendedKeyUsage'), /TLS Web Server Authentication/);
  assert.match(await text(join(dir, TLS_FILES.clientCert), 'extendedKeyUsage'), /TLS Web Client Authentication/);
  assert.match(await text(join(dir, TLS_FILES.caCert), 'basicConstraints'), /CA:TRUE/);
  const ca = new X509Certificate(tls.caCertPem);
  assert.equal(tls.caFingerprint, ca.fingerprint256);
  assert.match(ca.subject, /CN=mamori site CA site-a/);
  assert.match(new X509Certificate(tls.clientCertPem).subject, /OU=client\nCN=site-a/);
  // Strict purpose checks, as a TLS peer does them.
  await runProcess('openssl', [
    'verify',
    '-purpose',
    'sslserver',
    '-CAfile',
    join(dir, TLS_FILES.caCert),
    join(dir, TLS_FILES.serverCert),
  ]);
  await runProcess('openssl', [
    'verify',
    '-purpose',
    'sslclient',
    '-CAfile',
    join(dir, TLS_FILES.caCert),
    join(dir, TLS_FILES.clientCert),
  ]);
  await assert.rejects(
    runProcess('openssl', [
      'verify',
      '-purpose',
      'sslserver',
      '-CAfile',
      join(dir, TLS_FILES.caCert),
      join(dir, TLS_FILES.clientCert),
    ]),
  );
});

test('a restart keeps everything; a new listen address reissues only the server certificate', async () => {
  const dir = join(root, 'restart');
  const first = await ensureSiteTls({ dir, siteName: 'site-a', serverNames: serverNamesFor(['127.0.0.1']) });
  const again = await ensureSiteTls({ dir, siteName: 'site-a', serverNames: serverNamesFor(['127.0.0.1']) });
  assert.deepEqual(again.created, []);
  assert.equal(again.serverCertPem, first.serverCertPem);
  assert.equal(again.caFingerprint, first.caFingerprint);

  const moved = await ensureSiteTls({ dir, siteName: 'site-a', serverNames: serverNamesFor(['192.0.2.7']) });
  assert.deepEqual(moved.created, ['server']);
  assert.equal(moved.caFingerprint, first.caFingerprint, 'the CA peers pinned does not change');
  assert.ok(new X509Certificate(moved.serverCertPem).checkIP('192.0.2.7'));
  assert.equal(moved.clientCertPem, first.clientCertPem);
});

test('a lost or mismatched leaf key is reissued by the same CA; a lost CA key makes a new CA', async () => {
  const dir = join(root, 'repair');
  const first = await ensureSiteTls({ dir, siteName: 'site-b' });
  await unlink(join(dir, TLS_FILES.clientKey));
  const fixed = await ensureSiteTls({ dir, siteName: 'site-b' });
  assert.deepEqual(fixed.created, ['client']);
  assert.equal(fixed.caFingerprint, first.caFingerprint);
  // A server key that belongs to another certificate.
  await writeFile(join(dir, TLS_FILES.serverKey), await readFile(join(dir, TLS_FILES.clientKey)));
  assert.deepEqual((await ensureSiteTls({ dir, siteName: 'site-b' })).created, ['server']);

  await unlink(join(dir, TLS_FILES.caKey));
  const fresh = await ensureSiteTls({ dir, siteName: 'site-b' });
  assert.deepEqual(fresh.created, ['ca', 'server', 'client']);
  assert.notEqual(fresh.caFingerprint, first.caFingerprint);
  await runProcess('openssl', ['verify', '-CAfile', join(dir, TLS_FILES.caCert), join(dir, TLS_FILES.serverCert)]);
});

test('a wildcard listen address covers the host addresses', () => {
  const names = serverNamesFor(['0.0.0.0']);
  assert.ok(names.includes('127.0.0.1'));
  assert.ok(!names.includes('0.0.0.0'));
});

test('QEMU credentials: peer CA then own CA, own server and client pairs, keys 0600', async () => {
  const a = await ensureSiteTls({ dir: join(root, 'qa'), siteName: 'site-a' });
  const b = await ensureSiteTls({ dir: join(root, 'qb'), siteName: 'site-b' });
  const dir = await writeQemuTlsCreds({
    dir: join(root, 'qemu-creds'),
    site: a,
    peerCaPem: b.caCertPem,
    endpoint: 'both',
  });
  assert.equal(await mode(dir), 0o700);
  const bundle = await readFile(join(dir, 'ca-cert.pem'), 'utf8');
  assert.equal(bundle.match(/BEGIN CERTIFICATE/g)?.length, 2);
  assert.ok(bundle.startsWith(b.caCertPem.trim()));
  assert.equal(await readFile(join(dir, 'server-cert.pem'), 'utf8'), a.serverCertPem);
  assert.equal(await mode(join(dir, 'server-key.pem')), 0o600);
  assert.equal(await mode(join(dir, 'client-key.pem')), 0o600);
  const serverOnly = await writeQemuTlsCreds({
    dir: join(root, 'qemu-server'),
    site: a,
    peerCaPem: b.caCertPem,
    endpoint: 'server',
  });
  await assert.rejects(stat(join(serverOnly, 'client-key.pem')));
  await assert.rejects(
    writeQemuTlsCreds({ dir: join(root, 'qemu-bad'), site: a, peerCaPem: 'not a cert', endpoint: 'client' }),
    /INVALID_INPUT|not a PEM/,
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { ensureSiteTls, serverNamesFor } from '../../../src/sites/site-tls.js';
import { httpsJson, knownErrorCode, readErrorBody, TransportError } from '../../../src/core/https-json-client.js';

test("a peer's answer is read up to a bound, then refused; a normal answer still reads", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-bound-'));
  const tls = await ensureSiteTls({ dir, siteName: 'bound', serverNames: serverNamesFor([]) });
  const big = Buffer.alloc(2 * 1024 * 1024, 0x20);
  const server = createServer({ key: tls.serverKeyPem, cert: tls.serverCertPem }, (req, res) => {
    res.setHeader('content-type', 'application/json');
    // No content-length on /stream: the bound must hold while reading, not only from the header.
    if (req.url === '/stream') {
      for (let i = 0; i < 4; i++) res.write(big);
      res.end('{}');
    } else if (req.url === '/declared') {
      res.setHeader('content-length', String(64 * 1024 * 1024));
      res.write('{');
      setTimeout(() => res.destroy(), 2_000).unref();
    } else res.end(JSON.stringify({ ok: 'ünïcode'.repeat(1000) }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = (p: string) => new URL(`https://127.0.0.1:${(server.address() as AddressInfo).port}${p}`);
  try {
    const ok = await httpsJson({
      url: url('/small'),
      method: 'GET',
      trust: { ca: tls.caCertPem },
      timeoutMs: 10_000,
      maxBytes: 1024 * 1024,
    });
    assert.equal((ok.json as { ok: string }).ok, 'ünïcode'.repeat(1000));
    for (const p of ['/stream', '/declared']) {
      await assert.rejects(
        httpsJson({
          url: url(p),
          method: 'GET',
          trust: { ca: tls.caCertPem },
          timeoutMs: 10_000,
          maxBytes: 1024 * 1024,
        }),
        (e: unknown) => e instanceof TransportError && /more than/.test(e.message) && /1048576/.test(e.message),
      );
    }
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('one client for the CLI and for peers: bearer token, JSON body, pinned CA with or without the host name, system trust, plain http', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-client-'));
  // A certificate naming only "localhost": reached as 127.0.0.1, the host name does not match.
  const tls = await ensureSiteTls({ dir, siteName: 'client', serverNames: ['localhost'] });
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    let text = '';
    req
      .setEncoding('utf8')
      .on('data', (c: string) => (text += c))
      .on('end', () => {
        res.setHeader('content-type', 'application/json');
        if (req.url === '/fail') {
          res.statusCode = 409;
          res.end(JSON.stringify({ error: { code: 'VM_EXISTS', message: 'taken', details: { vm: 'a' } } }));
          return;
        }
        res.end(
          JSON.stringify({
            method: req.method,
            auth: req.headers.authorization ?? null,
            type: req.headers['content-type'] ?? null,
            body: text ? JSON.parse(text) : null,
          }),
        );
      });
  };
  const secure = createServer({ key: tls.serverKeyPem, cert: tls.serverCertPem }, handler);
  const plain = createHttpServer(handler);
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  const at = (host: string, p: string) => new URL(`https://${host}:${(secure.address() as AddressInfo).port}${p}`);
  try {
    const pinned = await httpsJson({
      url: at('127.0.0.1', '/x'),
      method: 'POST',
      body: { a: 1 },
      token: 't0k',
      trust: { ca: tls.caCertPem },
      timeoutMs: 10_000,
    });
    assert.deepEqual(pinned.json, { method: 'POST', auth: 'Bearer t0k', type: 'application/json', body: { a: 1 } });
    assert.ok(pinned.peerCertificate);
    // The CLI's CA trust checks the host name; the peers' pinned CA does not.
    await assert.rejects(
      httpsJson({
        url: at('127.0.0.1', '/x'),
        method: 'GET',
        trust: { ca: tls.caCertPem, checkHostName: true },
        timeoutMs: 10_000,
      }),
      (e: unknown) =>
        e instanceof TransportError &&
        e.sysCode === 'ERR_TLS_CERT_ALTNAME_INVALID' &&
        /altnames/.test(e.systemMessage ?? ''),
    );
    const named = await httpsJson({
      url: at('localhost', '/x'),
      method: 'GET',
      trust: { ca: tls.caCertPem, checkHostName: true },
      timeoutMs: 10_000,
      reuseConnection: true,
    });
    assert.equal((named.json as { auth: unknown }).auth, null);
    // The system's CAs do not know a site's private CA.
    await assert.rejects(
      httpsJson({ url: at('localhost', '/x'), method: 'GET', trust: { system: true }, timeoutMs: 10_000 }),
      (e: unknown) => e instanceof TransportError && e.failure === 'cert-untrusted',
    );
    const overHttp = await httpsJson({
      url: new URL(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/x`),
      method: 'DELETE',
      token: 'p',
      trust: { system: true },
      timeoutMs: 10_000,
    });
    assert.deepEqual(overHttp.json, { method: 'DELETE', auth: 'Bearer p', type: null, body: null });
    const failed = await httpsJson({
      url: at('127.0.0.1', '/fail'),
      method: 'GET',
      trust: { ca: tls.caCertPem },
      timeoutMs: 10_000,
    });
    assert.equal(failed.status, 409);
    assert.deepEqual(readErrorBody(failed.json), { code: 'VM_EXISTS', message: 'taken', details: { vm: 'a' } });
    assert.equal(readErrorBody({ ok: true }), null);
    assert.equal(knownErrorCode('VM_EXISTS'), 'VM_EXISTS');
    assert.equal(knownErrorCode('A_CODE_FROM_A_NEWER_SERVER'), 'INTERNAL');
  } finally {
    secure.close();
    plain.close();
    secure.closeAllConnections();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a br or gzip answer is decoded, within the same bound; an unknown or broken encoding is refused', async () => {
  const value = { items: Array.from({ length: 2000 }, (_, i) => ({ name: `vm-${i}`, state: 'stopped' })) };
  const text = JSON.stringify(value);
  const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20));
  let acceptEncoding: string | undefined;
  const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    acceptEncoding = req.headers['accept-encoding'];
    res.setHeader('content-type', 'application/json');
    const [body, encoding] =
      req.url === '/br'
        ? [brotliCompressSync(text), 'br']
        : req.url === '/gzip'
          ? [gzipSync(text), 'gzip']
          : req.url === '/bomb'
            ? [bomb, 'gzip']
            : req.url === '/broken'
              ? [Buffer.from('not gzip'), 'gzip']
              : [Buffer.from(text), 'zstd'];
    res.setHeader('content-encoding', encoding);
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const get = (p: string) =>
    httpsJson({
      url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}${p}`),
      method: 'GET',
      trust: { insecure: true },
      timeoutMs: 10_000,
      maxBytes: 1024 * 1024,
    });
  try {
    assert.deepEqual((await get('/br')).json, value);
    assert.equal(acceptEncoding, 'br, gzip');
    assert.deepEqual((await get('/gzip')).json, value);
    for (const p of ['/bomb', '/broken', '/zstd'])
      await assert.rejects(get(p), (e: unknown) => e instanceof TransportError && /does not decode/.test(e.message));
  } finally {
    server.close();
  }
});

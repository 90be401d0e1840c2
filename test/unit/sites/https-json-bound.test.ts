import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { ensureSiteTls, serverNamesFor } from '../../../src/sites/site-tls.js';
import { httpsJson, TransportError } from '../../../src/sites/https-json.js';

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
    const ok = await httpsJson({ url: url('/small'), method: 'GET', trust: { ca: tls.caCertPem }, timeoutMs: 10_000, maxBytes: 1024 * 1024 });
    assert.equal((ok.json as { ok: string }).ok, 'ünïcode'.repeat(1000));
    for (const p of ['/stream', '/declared']) {
      await assert.rejects(httpsJson({ url: url(p), method: 'GET', trust: { ca: tls.caCertPem }, timeoutMs: 10_000, maxBytes: 1024 * 1024 }), (e: unknown) => e instanceof TransportError && /more than/.test(e.message) && /1048576/.test(e.message));
    }
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

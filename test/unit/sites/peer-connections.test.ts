import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureSiteTls } from '../../../src/sites/site-tls.js';
import { PeerClient } from '../../../src/sites/peer-client.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

const root = await mkdtemp(join(tmpdir(), 'mamori-peer-conn-'));
after(() => rm(root, { recursive: true, force: true }));

const b = await ensureSiteTls({ dir: join(root, 'b'), siteName: 'site-b' });
const other = await ensureSiteTls({ dir: join(root, 'other'), siteName: 'site-other' });

/** A stand-in peer API counting the TLS connections it accepts. */
async function peerServer(): Promise<{ url: string; connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer({ key: b.serverKeyPem, cert: b.serverCertPem }, (req, res) => {
    const body = req.url === '/health' ? { site: 'site-b', time: Date.now() } : { path: req.url };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  server.on('secureConnection', (s: Socket) => {
    connections += 1;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function client(url: string, caCertPem: string): PeerClient {
  return new PeerClient({ name: 'site-b', url, caCertPem, caFingerprint: 'x', token: 'tok' });
}

test("a site's calls to its peer share one kept-alive connection; the health check opens its own", async () => {
  const s = await peerServer();
  try {
    const c = client(s.url, b.caCertPem);
    for (let i = 0; i < 5; i++) assert.deepEqual(await c.get(`/r/${i}`), { path: `/r/${i}` });
    assert.equal(s.connections(), 1, 'five calls in turn, one TLS handshake');
    await c.health();
    await c.health();
    assert.equal(s.connections(), 3, 'each health check proves a new connection works');
  } finally {
    await s.close();
  }
});

test('a pooled connection is never used for another CA: the peer is checked against the CA pinned now', async () => {
  const s = await peerServer();
  try {
    assert.deepEqual(await client(s.url, b.caCertPem).get('/one'), { path: '/one' });
    // Same address, another pinned CA (a re-paired peer): a new handshake, which fails.
    await assert.rejects(client(s.url, other.caCertPem).get('/two'), (e) => isMamoriError(e, 'PEER_CERT_MISMATCH'));
    assert.equal(s.connections(), 2, 'the second client made its own handshake instead of taking the pooled socket');
  } finally {
    await s.close();
  }
});

test('a peer that went away: the next call fails as unreachable instead of writing into the closed pooled socket', async () => {
  const s = await peerServer();
  const c = client(s.url, b.caCertPem);
  assert.deepEqual(await c.get('/before'), { path: '/before' });
  await s.close();
  await assert.rejects(c.get('/while-down'), (e) => isMamoriError(e, 'PEER_UNREACHABLE'));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { ensureSiteTls } from '../../../src/sites/site-tls.js';
import { ApiClient, routeUrl } from '../../../src/cli/api-client.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

/** The CLI's client over core/https-json-client.ts: what the person sees for each answer and each failure. */
test("the CLI client: token and body out, the server's typed errors back, unreachable sites worded with a hint", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-api-client-'));
  const tls = await ensureSiteTls({ dir, siteName: 'cli' });
  const server = createServer({ key: tls.serverKeyPem, cert: tls.serverCertPem }, (req, res) => {
    let text = '';
    req
      .setEncoding('utf8')
      .on('data', (c: string) => (text += c))
      .on('end', () => {
        const send = (status: number, body: unknown): void => {
          res.statusCode = status;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify(body));
        };
        if (req.url === '/vms/taken')
          send(409, { error: { code: 'VM_EXISTS', message: 'a VM named a exists', details: { vm: 'a' } } });
        else if (req.url === '/newer')
          send(400, { error: { code: 'SOME_FUTURE_CODE', message: 'from a newer server' } });
        else if (req.url === '/bare') send(500, {});
        else send(200, { auth: req.headers.authorization, method: req.method, body: text ? JSON.parse(text) : null });
      });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const api = new ApiClient({ url, token: 'adm1n', ca: tls.caCertPem });
  try {
    assert.deepEqual(await api.request('POST', '/vms', { name: 'a' }), {
      auth: 'Bearer adm1n',
      method: 'POST',
      body: { name: 'a' },
    });
    assert.deepEqual(await api.request('GET', '/vms'), { auth: 'Bearer adm1n', method: 'GET', body: null });
    await assert.rejects(
      api.request('GET', '/vms/taken'),
      (e: unknown) => isMamoriError(e, 'VM_EXISTS') && e.message === 'a VM named a exists' && e.details?.['vm'] === 'a',
    );
    await assert.rejects(
      api.request('GET', '/newer'),
      (e: unknown) => isMamoriError(e, 'INTERNAL') && e.message === 'from a newer server',
    );
    await assert.rejects(
      api.request('GET', '/bare'),
      (e: unknown) => isMamoriError(e, 'INTERNAL') && e.message === 'HTTP 500',
    );
    // Without the site's CA: the system's CAs do not know it.
    await assert.rejects(
      new ApiClient({ url, token: 'x' }).request('GET', '/vms'),
      (e: unknown) =>
        isMamoriError(e, 'SITE_UNREACHABLE') &&
        e.message.startsWith(`cannot reach the site at ${url}: `) &&
        e.message.endsWith(
          "(the site's certificate is not trusted: use --data DIR, or set MAMORI_CA to the site's DATA/tls/ca-cert.pem)",
        ),
    );
  } finally {
    server.close();
    server.closeAllConnections();
  }
  // A port nothing listens on (one this client never had a kept-alive connection to).
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
  const goneUrl = `https://127.0.0.1:${(gone.address() as AddressInfo).port}`;
  await new Promise((r) => gone.close(r));
  await assert.rejects(
    new ApiClient({ url: goneUrl, token: 'x', ca: tls.caCertPem }).request('GET', '/vms'),
    (e: unknown) =>
      isMamoriError(e, 'SITE_UNREACHABLE') &&
      e.message.startsWith(`cannot reach the site at ${goneUrl}: connect ECONNREFUSED`),
  );
  await rm(dir, { recursive: true, force: true });
});

/** The typed methods send what the route template and its parameters say, encoded. */
test('routeUrl fills path parameters (encoded), appends the query, and refuses a missing parameter', () => {
  assert.equal(routeUrl('/vms'), '/vms');
  assert.equal(routeUrl('/vms/{name}/start', { name: 'a b/c' }), '/vms/a%20b%2Fc/start');
  assert.equal(
    routeUrl('/mappings/{peer}/{kind}/{source}', { peer: 'b', kind: 'network', source: 'lan' }),
    '/mappings/b/network/lan',
  );
  assert.equal(
    routeUrl('/jobs', undefined, { kind: 'replication cycle', limit: undefined }),
    '/jobs?kind=replication+cycle',
  );
  assert.equal(routeUrl('/vms/{name}', { name: 'a' }, {}), '/vms/a');
  assert.throws(
    () => routeUrl('/vms/{name}', {}),
    (e: unknown) => isMamoriError(e, 'INTERNAL') && e.message === 'route /vms/{name} called without its name',
  );
});

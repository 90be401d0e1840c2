import { test } from 'node:test';
import assert from 'node:assert/strict';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import Fastify from 'fastify';
import { acceptedEncoding, sendJsonList } from '../../../src/api/list-reply.js';

test('a big list goes out compressed as the client asks (br before gzip), a small one or to a client that asks nothing as it is', async () => {
  const big = Array.from({ length: 1000 }, (_, i) => ({ name: `vm-${i}`, state: 'stopped', lastCycle: null }));
  const small = big.slice(0, 3);
  const app = Fastify();
  app.get('/big', async (req, reply) => sendJsonList(req, reply, big));
  app.get('/small', async (req, reply) => sendJsonList(req, reply, small));
  try {
    const ask = (url: string, enc?: string) =>
      app.inject({ method: 'GET', url, headers: enc === undefined ? {} : { 'accept-encoding': enc } });
    const br = await ask('/big', 'gzip, deflate, br');
    assert.equal(br.headers['content-encoding'], 'br');
    assert.equal(br.headers['vary'], 'accept-encoding');
    assert.match(String(br.headers['content-type']), /^application\/json/);
    assert.deepEqual(JSON.parse(brotliDecompressSync(br.rawPayload).toString('utf8')), big);
    assert.ok(br.rawPayload.length < JSON.stringify(big).length / 5);
    const gz = await ask('/big', 'gzip');
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.deepEqual(JSON.parse(gunzipSync(gz.rawPayload).toString('utf8')), big);
    for (const [url, enc] of [
      ['/big', undefined],
      ['/big', 'identity'],
      ['/big', 'br;q=0, gzip;q=0'],
      ['/small', 'br'],
    ] as const) {
      const plain = await ask(url, enc);
      assert.equal(plain.headers['content-encoding'], undefined, `${url} ${enc}`);
      assert.deepEqual(plain.json(), url === '/big' ? big : small);
    }
  } finally {
    await app.close();
  }
});

test('acceptedEncoding reads the header as HTTP says: names case-insensitive, q=0 refuses', () => {
  assert.equal(acceptedEncoding('GZIP, BR'), 'br');
  assert.equal(acceptedEncoding(['gzip', 'deflate']), 'gzip');
  assert.equal(acceptedEncoding('br;q=0, gzip;q=0.5'), 'gzip');
  assert.equal(acceptedEncoding('br; q=0.0'), null);
  assert.equal(acceptedEncoding(undefined), null);
  assert.equal(acceptedEncoding('*'), null);
});

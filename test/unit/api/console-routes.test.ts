import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { consoleRoutes } from '../../../src/api/routes/console.js';

let dir: string;
let built: FastifyInstance;
let missing: FastifyInstance;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-console-'));
  await mkdir(join(dir, 'dist', 'assets'), { recursive: true });
  await writeFile(join(dir, 'dist', 'index.html'), '<!doctype html><title>console</title>');
  await writeFile(join(dir, 'dist', 'assets', 'app-1234.js'), 'console.log(1)');
  built = Fastify();
  await built.register(consoleRoutes({ dir: join(dir, 'dist') }));
  missing = Fastify();
  await missing.register(consoleRoutes({ dir: join(dir, 'nothing-built') }));
});
after(async () => {
  await built.close();
  await missing.close();
  await rm(dir, { recursive: true, force: true });
});

test('/ and /ui lead to /ui/, which serves the app', async () => {
  for (const url of ['/', '/ui']) {
    const r = await built.inject({ url });
    assert.equal(r.statusCode, 302);
    assert.equal(r.headers.location, '/ui/');
  }
  const page = await built.inject({ url: '/ui/' });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /<title>console<\/title>/);
  assert.equal(page.headers['cache-control'], 'no-cache');
});

test('pages of the app get its index.html; assets are served and cached; unknown files are 404', async () => {
  assert.match((await built.inject({ url: '/ui/plans/apps-plan' })).body, /<title>console/);
  const asset = await built.inject({ url: '/ui/assets/app-1234.js' });
  assert.equal(asset.statusCode, 200);
  assert.match(String(asset.headers['cache-control']), /immutable/);
  assert.equal((await built.inject({ url: '/ui/assets/gone-9999.js' })).statusCode, 404);
  assert.equal((await built.inject({ url: '/ui/..%2f..%2fetc%2fpasswd.txt' })).statusCode, 404);
});

test('without a build, /ui/ says to run make build', async () => {
  const r = await missing.inject({ url: '/ui/' });
  assert.equal(r.statusCode, 503);
  assert.match(r.body, /make build/);
});

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { SiteProcess } from '../../harness/site-process.js';

let site: SiteProcess | undefined;
after(async () => {
  await site?.destroy();
});

test('--insecure-http serves plain HTTP (with a warning), still makes the site CA, and cannot be paired with', async () => {
  site = await SiteProcess.create('dev-site', { serveArgs: ['--insecure-http'] });
  await site.start();
  assert.match(site.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  // The warning goes to stderr around the time the URL file appears: wait for it, do not race it.
  await site.waitFor('the plain-HTTP warning', async () => /WARNING: plain HTTP/.test(site!.serverLog), 10_000);
  assert.match(await readFile(site.caCertFile, 'utf8'), /BEGIN CERTIFICATE/);
  const ca = await site.cliJson<{ name: string; fingerprint: string }>('site', 'ca');
  assert.equal(ca.name, 'dev-site');
  const pair = await site.cli('site', 'pair', site.url, '--token', 'mamori_x');
  assert.equal(pair.code, 2);
  assert.match(pair.stderr, /HTTPS only.*\[INVALID_INPUT\]/);
});

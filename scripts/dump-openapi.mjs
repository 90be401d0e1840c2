// Writes the site API's OpenAPI document (what GET /openapi.json answers) to the file given,
// for the web console's types: node scripts/dump-openapi.mjs web/src/api/openapi.json
// Run from the checkout root after tsc (it loads dist/). The document is built from the route
// schemas, so it needs the app, not a listening server: a throwaway site answers one inject().
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: node scripts/dump-openapi.mjs OUT.json\n');
  process.exit(2);
}
const { openSite } = await import(pathToFileURL(resolve('dist/src/main.js')).href);
const { createLogger } = await import(pathToFileURL(resolve('dist/src/core/logger.js')).href);
const dir = await mkdtemp(join(tmpdir(), 'mamori-openapi-'));
try {
  const site = await openSite({
    dataDir: join(dir, 'data'),
    name: 'openapi',
    insecureHttp: true,
    logger: createLogger({ level: 'silent' }),
  });
  try {
    const res = await site.app.inject({ method: 'GET', url: '/openapi.json' });
    if (res.statusCode !== 200) throw new Error(`GET /openapi.json answered ${res.statusCode}: ${res.body}`);
    await writeFile(out, `${JSON.stringify(res.json(), null, 1)}\n`);
  } finally {
    await site.close();
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

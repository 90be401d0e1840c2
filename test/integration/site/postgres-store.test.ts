import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess, type RunResult } from '../../../src/core/run-process.js';
import { MAMORI_BIN, SiteProcess } from '../../harness/site-process.js';
import { PgCluster } from '../../harness/pg-cluster.js';

interface Vm {
  id: string;
  name: string;
  state: string;
}

let cluster: PgCluster;
let site: SiteProcess;
let url: string;
before(async () => {
  cluster = await PgCluster.start();
  url = await cluster.createDatabase('site');
  site = await SiteProcess.create('site-pg', { serveArgs: ['--db', url] });
});
after(async () => {
  await site?.destroy();
  await cluster?.stop();
});

test('mamori serve --db postgresql://...: VMs are made, listed and deleted there, and a restarted server sees the same rows', async () => {
  await site.start();
  assert.match(site.serverLog, /database postgresql:\/\/\*\*\*@localhost\/site_1/);
  await site.cliJson('vm', 'create', 'keep', '--test-guest', '--data-disk', '16M');
  await site.cliJson('vm', 'create', 'gone', '--test-guest');
  const made = await site.cliJson<Vm[]>('vm', 'list');
  assert.deepEqual(made.map((v) => v.name).sort(), ['gone', 'keep']);
  await site.cliJson('vm', 'delete', 'gone');
  assert.deepEqual(
    (await site.cliJson<Vm[]>('vm', 'list')).map((v) => v.name),
    ['keep'],
  );

  await site.stopServer();
  await site.start();
  const after = await site.cliJson<Vm[]>('vm', 'list');
  assert.deepEqual(
    after.map((v) => [v.name, v.id, v.state]),
    made.filter((v) => v.name === 'keep').map((v) => [v.name, v.id, v.state]),
  );
  assert.ok(!site.serverLog.includes(cluster.password), 'the database password never shows in the server log');

  // The rows are in PostgreSQL, not in a SQLite file beside the data.
  const pg = await import('pg');
  const client = new pg.default.Client({ connectionString: url });
  await client.connect();
  try {
    const rows = (await client.query<{ name: string }>('SELECT name FROM vms ORDER BY name')).rows;
    assert.deepEqual(
      rows.map((r) => r.name),
      ['keep'],
    );
  } finally {
    await client.end();
  }
});

test('a URL that is not PostgreSQL, or a database that cannot be opened, stops serve with a message that masks the password', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-it-'));
  const serve = (db: string): Promise<RunResult> =>
    runProcess(process.execPath, [MAMORI_BIN, 'serve', '--data', dir, '--listen', '127.0.0.1:0', '--db', db], {
      timeoutMs: 60_000,
      okCodes: Array.from({ length: 256 }, (_, i) => i),
    });
  try {
    const wrong = await serve('mysql://root:hunter2@db/mamori');
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /only PostgreSQL URLs/);
    const missing = await serve(`postgresql://mamori:hunter2@localhost/nope?host=${encodeURIComponent(cluster.dir)}`);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /cannot connect to the database postgresql:\/\/\*\*\*@localhost\/nope/);
    assert.ok(!`${wrong.stderr}${missing.stderr}`.includes('hunter2'), 'no password in the messages');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

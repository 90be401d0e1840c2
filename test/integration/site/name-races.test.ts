import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSite, type Site } from '../../../src/main.js';
import { runProcess } from '../../../src/core/run-process.js';
import { imageRows, raceAtOneName } from '../../harness/name-races.js';

/*
 * Races at one name (issue 18): before, 20 parallel creates of one disk name gave one 201,
 * sixteen 409 and three 500s, and each loser removed the path it shared with the winner, so
 * the winner's row named a file that was gone; a snapshot named s2 of VM v made its overlay
 * at the file of a disk named v-data.s2. Here 20 rounds of 20 parallel creates, imports,
 * snapshots and deletes hit one name each round; at the end every file a row names exists
 * and every file in the pool belongs to a row: zero lost, zero orphaned, never a 500.
 */

let site: Site;
let dir: string;
let auth: { authorization: string };
let source: string;

before(async () => {
  process.env['MAMORI_ACCEL'] = 'tcg';
  dir = await mkdtemp(join(tmpdir(), 'mamori-races-'));
  site = await openSite({ dataDir: join(dir, 'data'), name: 'races', hostPaths: { importDirs: [join(dir, 'in')] } });
  auth = { authorization: `Bearer ${(await readFile(site.paths.adminToken, 'utf8')).trim()}` };
  source = join(dir, 'in', 'src.qcow2');
  await runProcess('mkdir', ['-p', join(dir, 'in')]);
  await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', source, '2M']);
  const vm = await site.app.inject({
    method: 'POST',
    url: '/vms',
    headers: auth,
    payload: { name: 'vrace', dataDisk: '1M', nics: [{ network: 'none' }] },
  });
  assert.equal(vm.statusCode, 201, vm.body);
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

test('20 rounds of 20 parallel creates, imports, snapshots and deletes at one name lose and orphan nothing', async () => {
  const pool = join(dir, 'data', 'pools', 'default');
  const out = await raceAtOneName(site.app, {
    token: auth.authorization.slice(7),
    source,
    vm: 'vrace',
    database: site.paths.database,
    pool,
    rounds: 20,
  });
  for (const [what, set] of out.statuses)
    assert.ok(![...set].some((s) => s >= 500), `${what} answered ${[...set].join(', ')}: never a 500`);
  assert.deepEqual(
    [...(out.statuses.get('create') ?? [])].filter((s) => ![201, 409].includes(s)),
    [],
    'create: 201 or 409',
  );
  assert.deepEqual(
    [...(out.statuses.get('snapshot') ?? [])].filter((s) => ![201, 409].includes(s)),
    [],
    'snapshot: 201 or 409',
  );
  process.stdout.write(`objects_left_behind ${out.lost.length + out.orphaned.length} after ${out.requests} requests\n`);
  assert.deepEqual(out.lost, [], 'every file a row names exists');
  assert.deepEqual(out.orphaned, [], 'every file in the pool belongs to a row');
  // Each round's snapshot exists exactly once, and its overlay is not any disk's file.
  const snaps = (await site.app.inject({ method: 'GET', url: '/vms/vrace/snapshots', headers: auth })).json() as {
    name: string;
  }[];
  assert.equal(snaps.length, 20);
  const rows = await imageRows(site.paths.database);
  const diskFiles = new Set(rows.map((d) => d.path));
  for (const d of rows) for (const o of d.overlays) assert.ok(!diskFiles.has(o), `overlay ${o} is no disk's file`);
});

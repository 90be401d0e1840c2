import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { openSite, type Site } from '../../../src/main.js';
import { runProcess } from '../../../src/core/run-process.js';

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
  const vm = await site.app.inject({ method: 'POST', url: '/vms', headers: auth, payload: { name: 'vrace', dataDisk: '1M', nics: [{ network: 'none' }] } });
  assert.equal(vm.statusCode, 201, vm.body);
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true }).catch(() => [])) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

test('20 rounds of 20 parallel creates, imports, snapshots and deletes at one name lose and orphan nothing', async () => {
  const statuses = new Map<string, Set<number>>();
  const seen = (what: string, status: number) => statuses.set(what, (statuses.get(what) ?? new Set()).add(status));
  const jobs: string[] = [];
  for (let round = 0; round < 20; round++) {
    const snap = `s${round}`;
    const calls: Promise<void>[] = [];
    const inject = (what: string, method: 'POST' | 'DELETE', url: string, payload?: object) =>
      calls.push(site.app.inject({ method, url, headers: auth, ...(payload ? { payload } : {}) }).then((r) => {
        seen(what, r.statusCode);
        if (what === 'import' && r.statusCode === 202) jobs.push(r.json().id);
      }));
    for (let i = 0; i < 6; i++) inject('create', 'POST', '/disks', { name: 'race', size: '1M' });
    for (let i = 0; i < 4; i++) inject('import', 'POST', '/disks/import', { name: 'race', source });
    for (let i = 0; i < 4; i++) inject('delete', 'DELETE', '/disks/race');
    for (let i = 0; i < 3; i++) inject('snapshot', 'POST', '/vms/vrace/snapshots', { name: snap });
    // A disk whose default file name is what a snapshot overlay was once named (VM-data.SNAP.qcow2).
    for (let i = 0; i < 3; i++) inject('shadow-disk', 'POST', '/disks', { name: `vrace-data.${snap}`, size: '1M' });
    await Promise.all(calls);
  }
  // Imports run as jobs: wait for every one to end before looking at the files.
  for (const id of jobs) {
    for (;;) {
      const j = (await site.app.inject({ method: 'GET', url: `/jobs/${id}`, headers: auth })).json();
      if (j.state !== 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  for (const [what, set] of statuses) assert.ok(![...set].some((s) => s >= 500), `${what} answered ${[...set].join(', ')}: never a 500`);
  assert.deepEqual([...(statuses.get('create') ?? [])].filter((s) => ![201, 409].includes(s)), [], 'create: 201 or 409');
  assert.deepEqual([...(statuses.get('snapshot') ?? [])].filter((s) => ![201, 409].includes(s)), [], 'snapshot: 201 or 409');

  const disks = (await site.app.inject({ method: 'GET', url: '/disks', headers: auth })).json() as { name: string; path: string; kind: string }[];
  const rows = await readRows();
  const named = new Set<string>();
  const lost: string[] = [];
  for (const d of rows) {
    for (const p of [d.path, ...d.overlays]) {
      named.add(p);
      if (!(await stat(p).then(() => true, () => false))) lost.push(`${d.name}: ${p}`);
    }
  }
  const pool = join(dir, 'data', 'pools', 'default');
  const orphaned = (await filesUnder(pool)).filter((f) => !named.has(f)).map((f) => relative(pool, f));
  process.stdout.write(`objects_left_behind ${lost.length + orphaned.length} (rows ${rows.length}, disks listed ${disks.length})\n`);
  assert.deepEqual(lost, [], 'every file a row names exists');
  assert.deepEqual(orphaned, [], 'every file in the pool belongs to a row');
  // Each round's snapshot exists exactly once, and its overlay is not any disk's file.
  const snaps = (await site.app.inject({ method: 'GET', url: '/vms/vrace/snapshots', headers: auth })).json() as { name: string }[];
  assert.equal(snaps.length, 20);
  const diskFiles = new Set(disks.map((d) => d.path));
  for (const d of rows) for (const o of d.overlays) assert.ok(!diskFiles.has(o), `overlay ${o} is no disk's file`);
});

/** Rows as the database has them (GET /disks does not list overlays). */
async function readRows(): Promise<{ name: string; path: string; overlays: string[] }[]> {
  const { openSqliteStore } = await import('../../../src/store/sqlite/open-sqlite-store.js');
  const store = await openSqliteStore(site.paths.database);
  try {
    const r = await store.db.selectFrom('disks').select(['name', 'path', 'overlays', 'kind']).execute();
    return r.filter((x) => x.kind === 'image').map((x) => ({ name: x.name, path: x.path, overlays: JSON.parse(x.overlays) as string[] }));
  } finally {
    await store.close();
  }
}

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import pg from 'pg';
import { SiteProcess } from '../../harness/site-process.js';
import { PgCluster } from '../../harness/pg-cluster.js';

/*
 * Parallel requests against a real `mamori serve --db postgresql://...` (issue 20): on
 * PostgreSQL requests interleave where SQLite's single writer ordered them. Each round fires
 * many requests at one name at once and checks the answers (one success, typed 409s, never a
 * 500) and what is left (no lost or extra file, no broken invariant in the rows).
 */

let cluster: PgCluster;
let site: SiteProcess;
let url: string;
let db: pg.Client;
let token: string;
let ca: string;

interface Answer {
  status: number;
  body: { error?: { code?: string } } & Record<string, unknown>;
}

function call(method: string, path: string, payload?: object): Promise<Answer> {
  const data = payload ? JSON.stringify(payload) : undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, site.url),
      {
        method,
        ca,
        headers: {
          authorization: `Bearer ${token}`,
          ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : {} }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Status codes (and error codes) of the answers, counted: "201", "409 SNAPSHOT_EXISTS". */
function tally(answers: Answer[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const a of answers) {
    const key = a.status < 400 ? String(a.status) : `${a.status} ${a.body.error?.code ?? '?'}`;
    out.set(key, (out.get(key) ?? 0) + 1);
  }
  return out;
}

before(async () => {
  cluster = await PgCluster.start();
  url = await cluster.createDatabase('races');
  site = await SiteProcess.create('site-pgraces', { serveArgs: ['--db', url] });
  await site.start();
  token = await site.adminToken();
  ca = await readFile(site.caCertFile, 'utf8');
  db = new pg.Client({ connectionString: url });
  await db.connect();
});
after(async () => {
  await db?.end();
  await site?.destroy();
  await cluster?.stop();
});

test('20 parallel snapshots of one name on one VM: one 201, nineteen 409 SNAPSHOT_EXISTS, its overlay kept, no stray file', async () => {
  const vm = await call('POST', '/vms', { name: 'vsnap', dataDisk: '1M', nics: [{ network: 'none' }] });
  assert.equal(vm.status, 201, JSON.stringify(vm.body));
  const layers = async (): Promise<string[]> => {
    const dir = join(site.dataDir, 'pools', 'default', '.layers');
    return (await readdir(dir).catch(() => [] as string[])).map((f) => join(dir, f)).sort();
  };
  const overlays = async (): Promise<string[]> =>
    (
      await db.query<{ overlays: string }>(
        "SELECT d.overlays FROM disks d JOIN vms v ON v.id = d.vm_id WHERE v.name = 'vsnap'",
      )
    ).rows
      .flatMap((r) => JSON.parse(r.overlays) as string[])
      .sort();

  const one = await Promise.all(
    Array.from({ length: 20 }, () => call('POST', '/vms/vsnap/snapshots', { name: 'one' })),
  );
  assert.deepEqual([...tally(one)].sort(), [
    ['201', 1],
    ['409 SNAPSHOT_EXISTS', 19],
  ]);
  const named = await overlays();
  assert.ok(named.length >= 1, 'the snapshot has its overlays');
  assert.deepEqual(await layers(), named, 'every overlay the rows name exists, and no other file');

  const many = await Promise.all(
    Array.from({ length: 20 }, (_, i) => call('POST', '/vms/vsnap/snapshots', { name: `s${i}` })),
  );
  const t = tally(many);
  assert.ok(![...t.keys()].some((k) => k.startsWith('5')), `never a 500: ${JSON.stringify([...t])}`);
  const listed = await call('GET', '/vms/vsnap/snapshots');
  assert.equal((listed.body as unknown as unknown[]).length, 1 + (t.get('201') ?? 0), 'one snapshot per 201');
  assert.deepEqual(await layers(), await overlays(), 'every overlay in a chain, none lost');
});

test('20 parallel protection groups of one name, and of one VM: one 201 each, typed 409s, never a 500', async () => {
  // Replicated VMs without a peer: the rows a `replicate enable` leaves, paused so no cycle runs.
  for (const name of ['pa', 'pb', 'pc']) {
    const vm = await call('POST', '/vms', { name, nics: [{ network: 'none' }] });
    assert.equal(vm.status, 201, JSON.stringify(vm.body));
    await db.query(
      `INSERT INTO replications (vm_id, peer, replica_id, rpo_ms, keep_points, state, created_at, updated_at)
       SELECT id, 'far', 'rep-' || id, 300000, 3, 'paused', now()::text, now()::text FROM vms WHERE name = $1`,
      [name],
    );
  }
  const sameName = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      call('POST', '/protection-groups', { name: 'web', vms: [i % 2 ? 'pa' : 'pb'] }),
    ),
  );
  // A loser is told the name is taken, or (checked first) that its VM is in that group now.
  const t = tally(sameName);
  assert.equal(t.get('201'), 1, JSON.stringify([...t]));
  assert.equal((t.get('409 GROUP_EXISTS') ?? 0) + (t.get('409 VM_ALREADY_PROTECTED') ?? 0), 19, JSON.stringify([...t]));
  const sameVm = await Promise.all(
    Array.from({ length: 20 }, (_, i) => call('POST', '/protection-groups', { name: `db${i}`, vms: ['pc'] })),
  );
  assert.deepEqual([...tally(sameVm)].sort(), [
    ['201', 1],
    ['409 VM_ALREADY_PROTECTED', 19],
  ]);
  const groups = await db.query<{ n: string }>('SELECT count(*) AS n FROM protection_groups');
  assert.equal(Number(groups.rows[0]!.n), 2, 'two groups, no half-made one');
});

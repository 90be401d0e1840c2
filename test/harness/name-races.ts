import type { FastifyInstance } from 'fastify';
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite/open-sqlite-store.js';

export interface RaceOutcome {
  /** What each kind of request answered (status codes). */
  statuses: Map<string, Set<number>>;
  /** Files a row names that do not exist. */
  lost: string[];
  /** Files in the pool no row names (relative to the pool). */
  orphaned: string[];
  requests: number;
}

/**
 * Rounds of parallel requests at one name (issue 18): creates, imports, deletes of one disk
 * name, snapshots of one VM, and disks named as a snapshot overlay once was (VM-data.SNAP).
 * After every import job has ended, the rows and the pool's files are compared both ways.
 */
export async function raceAtOneName(
  app: FastifyInstance,
  o: { token: string; source: string; vm: string; database: string; pool: string; rounds: number },
): Promise<RaceOutcome> {
  const auth = { authorization: `Bearer ${o.token}` };
  const statuses = new Map<string, Set<number>>();
  const seen = (what: string, status: number) => statuses.set(what, (statuses.get(what) ?? new Set()).add(status));
  const jobs: string[] = [];
  let requests = 0;
  for (let round = 0; round < o.rounds; round++) {
    const snap = `s${round}`;
    const calls: Promise<void>[] = [];
    const inject = (what: string, method: 'POST' | 'DELETE', url: string, payload?: object) => {
      requests += 1;
      calls.push(
        app.inject({ method, url, headers: auth, ...(payload ? { payload } : {}) }).then((r) => {
          seen(what, r.statusCode);
          if (what === 'import' && r.statusCode === 202) jobs.push(r.json().id);
        }),
      );
    };
    for (let i = 0; i < 6; i++) inject('create', 'POST', '/disks', { name: 'race', size: '1M' });
    for (let i = 0; i < 4; i++) inject('import', 'POST', '/disks/import', { name: 'race', source: o.source });
    for (let i = 0; i < 4; i++) inject('delete', 'DELETE', '/disks/race');
    for (let i = 0; i < 3; i++) inject('snapshot', 'POST', `/vms/${o.vm}/snapshots`, { name: snap });
    for (let i = 0; i < 3; i++) inject('shadow-disk', 'POST', '/disks', { name: `${o.vm}-data.${snap}`, size: '1M' });
    await Promise.all(calls);
  }
  for (const id of jobs) {
    for (;;) {
      const j = (await app.inject({ method: 'GET', url: `/jobs/${id}`, headers: auth })).json();
      if (j.state !== 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const rows = await imageRows(o.database);
  const named = new Set<string>();
  const lost: string[] = [];
  for (const d of rows) {
    for (const p of [d.path, ...d.overlays]) {
      named.add(p);
      if (
        !(await stat(p).then(
          () => true,
          () => false,
        ))
      )
        lost.push(`${d.name}: ${p}`);
    }
  }
  const orphaned = (await filesUnder(o.pool)).filter((f) => !named.has(f)).map((f) => relative(o.pool, f));
  return { statuses, lost, orphaned, requests };
}

/** Image disk rows as the database has them (GET /disks does not list overlays). */
export async function imageRows(database: string): Promise<{ name: string; path: string; overlays: string[] }[]> {
  const store = await openSqliteStore(database);
  try {
    const r = await store.db.selectFrom('disks').select(['name', 'path', 'overlays', 'kind']).execute();
    return r
      .filter((x) => x.kind === 'image')
      .map((x) => ({ name: x.name, path: x.path, overlays: JSON.parse(x.overlays) as string[] }));
  } finally {
    await store.close();
  }
}

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true }).catch(() => [])) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { CliResult, SiteProcess } from './site-process.js';

/*
 * Kill -9 at a job's step (issue 20): arm the step's fault point (`job:KIND:STEP`, passed when
 * the step's work is done and before the journal says so), start the operation, wait for the
 * server to die, start it again unarmed. Then what the cut left is read from the disk and the
 * site's database: files no row names, QEMUs no VM row owns.
 */

/**
 * Cuts `args` (a CLI command starting a job) at `point`. The server must be up on entry (it
 * is stopped cleanly, then started armed); it is up again, unarmed, on return unless
 * `restart: false`. Returns what the CLI said when the server died under it.
 */
export async function cutAtStep(
  site: SiteProcess,
  point: string,
  args: string[],
  opts: { restart?: boolean; env?: Record<string, string> } = {},
): Promise<CliResult> {
  await site.stopServer();
  await site.start({ ...opts.env, MAMORI_FAULT_POINTS: point });
  const r = await site.cli(...args);
  // A command that ended well never met the point: the step is not journalled, or not reached.
  assert.notEqual(r.code, 0, `${point} was never passed by mamori ${args.join(' ')}: ${r.stdout.slice(0, 2000)}`);
  assert.ok(
    await site.serverExited(120_000),
    `${point} did not kill the server under mamori ${args.join(' ')}: ${r.stderr}\n${site.serverLog.slice(-3000)}`,
  );
  if (opts.restart !== false) await site.start(opts.env ?? {});
  return r;
}

/** Every regular file under `dir`, as absolute paths (none if it does not exist). */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** What the site's rows name: every disk's file and overlays, every pool replica's files, every VM's id. */
export function namedByRows(dataDir: string): { files: Set<string>; vmIds: Set<string>; replicaIds: Set<string> } {
  // Read-only, beside the running server (WAL): a snapshot of what its rows say now.
  const db = new Database(join(dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
  try {
    const files = new Set<string>();
    for (const d of db.prepare('SELECT path, overlays FROM disks').all() as { path: string; overlays: string }[]) {
      files.add(d.path);
      for (const o of JSON.parse(d.overlays || '[]') as string[]) files.add(o);
    }
    for (const r of db.prepare('SELECT files FROM pool_replicas').all() as { files: string }[])
      for (const f of JSON.parse(r.files) as string[]) files.add(f);
    // A replica's disks name the files they started from (a reprotected VM's own disks): any path in them counts.
    for (const r of db.prepare('SELECT disks FROM replicas').all() as { disks: string }[])
      for (const f of pathsIn(JSON.parse(r.disks))) files.add(f);
    const vmIds = new Set((db.prepare('SELECT id FROM vms').all() as { id: string }[]).map((v) => v.id));
    const replicaIds = new Set((db.prepare('SELECT id FROM replicas').all() as { id: string }[]).map((r) => r.id));
    return { files, vmIds, replicaIds };
  } finally {
    db.close();
  }
}

/**
 * Files under the site's storage pools no row names, VM runtime folders of no VM, replica
 * folders of no replica: what a cut left behind. Empty lists when the site is clean.
 */
export async function orphans(dataDir: string): Promise<{ files: string[]; vmDirs: string[]; replicaDirs: string[] }> {
  const named = namedByRows(dataDir);
  const seeds = await seedFilesOf(dataDir);
  const files = (await filesUnder(join(dataDir, 'pools'))).filter((f) => !named.files.has(f) && !seeds.has(f));
  const vmDirs = (await readdir(join(dataDir, 'vms')).catch(() => [] as string[])).filter((id) => !named.vmIds.has(id));
  const replicaDirs = (await readdir(join(dataDir, 'replicas')).catch(() => [] as string[])).filter(
    (id) => !named.replicaIds.has(id),
  );
  return { files, vmDirs, replicaDirs };
}

/**
 * The files a replica's chains read as their seed, or released and not yet deleted (a reprotect's
 * old disks: the replica owns them, by its manifests, until its compaction absorbs and deletes them).
 */
async function seedFilesOf(dataDir: string): Promise<Set<string>> {
  const out = new Set<string>();
  const root = join(dataDir, 'replicas');
  for (const replica of await readdir(root).catch(() => [] as string[]))
    for (const disk of await readdir(join(root, replica)).catch(() => [] as string[])) {
      const text = await readFile(join(root, replica, disk, 'manifest.json'), 'utf8').catch(() => null);
      if (text === null) continue;
      const m = JSON.parse(text) as { seed?: { file: string }[]; releasedSeed?: { file: string }[] };
      for (const l of [...(m.seed ?? []), ...(m.releasedSeed ?? [])]) out.add(l.file);
    }
  return out;
}

function pathsIn(v: unknown): string[] {
  if (typeof v === 'string') return v.startsWith('/') ? [v] : [];
  if (Array.isArray(v)) return v.flatMap(pathsIn);
  if (v && typeof v === 'object') return Object.values(v).flatMap(pathsIn);
  return [];
}

/** Pids of the QEMUs running on this site's files (their command line names its data folder), from /proc. */
export async function qemuPidsOf(dataDir: string): Promise<number[]> {
  const out: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const argv = (await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[0]?.includes('qemu-system') && argv.some((a) => a.includes(dataDir))) out.push(Number(p));
  }
  return out;
}

/** No QEMU runs on the site's files that its VM list does not show (a cut's QEMU is adopted or stopped). */
export async function assertNoStrayQemu(site: SiteProcess): Promise<void> {
  const listed = new Set(await site.vmPids());
  const running = await qemuPidsOf(site.dataDir);
  for (const pid of running) site.trackPid(pid);
  assert.deepEqual(
    running.filter((p) => !listed.has(p)),
    [],
    `QEMUs the site does not list (listed: ${[...listed].join(', ')})`,
  );
}

import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { SiteProcess } from './site-process.js';

/**
 * The cut every kill -9 step test makes: restart the site with one job step's fault point
 * armed (`job:KIND:STEP`, core/fault-points.ts), start the operation, wait for the server to
 * SIGKILL itself right after that step's work, then start it again unarmed (its start runs
 * the job's recovery rule before it serves). Returns what the trigger returned (a CLI run
 * that saw its server die, usually), for messages. `whileDown` runs between the death and
 * the restart.
 */
export async function killAtStep<T>(
  site: SiteProcess,
  kind: string,
  step: string,
  trigger: () => Promise<T>,
  opts: { timeoutMs?: number; whileDown?: () => Promise<void> } = {},
): Promise<T> {
  await site.stopServer();
  await site.start({ MAMORI_FAULT_POINTS: `job:${kind}:${step}` });
  const out = trigger();
  // The trigger may fail (its server died under it); its outcome is for the caller's messages.
  out.catch(() => undefined);
  if (!(await site.serverExited(opts.timeoutMs ?? 300_000)))
    throw new Error(`the server did not die at job:${kind}:${step}\n${site.serverLog.slice(-4000)}`);
  // What the cut left, seen before any recovery runs (the other site's half-made copy, say).
  await opts.whileDown?.();
  await site.start();
  return out;
}

/** Running, and not a zombie waiting for its (re)parent to reap it. */
export async function alive(pid: number): Promise<boolean> {
  const st = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return st !== '' && st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) !== 'Z';
}

/**
 * Every regular file under `dir` (relative paths, sorted), for an orphan check: what a cut
 * operation left is what is there after recovery and was not before. Sockets, pid files and
 * the database's own files are left out (they come and go with the server, not with a job).
 */
export async function filesUnder(dir: string): Promise<string[]> {
  const names = (await readdir(dir, { recursive: true }).catch(() => [] as string[])) as string[];
  const out: string[] = [];
  for (const n of names) {
    const st = await stat(join(dir, n)).catch(() => null);
    if (!st?.isFile()) continue;
    const rel = relative(dir, join(dir, n));
    if (/\.(pid|sock|log)$|mamori\.db(-wal|-shm|-journal)?$|^url$|^tls\/|^admin-token$/.test(rel)) continue;
    out.push(rel);
  }
  return out.sort();
}

/** The pids named by pid files under `dir` that are still running (a storage daemon, qemu-nbd, a QEMU). */
export async function livePidFiles(dir: string): Promise<{ file: string; pid: number }[]> {
  const names = (await readdir(dir, { recursive: true }).catch(() => [] as string[])) as string[];
  const out: { file: string; pid: number }[] = [];
  // server.pid at the top is the site server itself, not something an operation started.
  for (const f of names.filter((x) => x.endsWith('.pid') && x !== 'server.pid')) {
    const pid = Number((await readFile(join(dir, f), 'utf8').catch(() => '')).trim());
    if (pid > 0 && (await alive(pid))) out.push({ file: f, pid });
  }
  return out;
}

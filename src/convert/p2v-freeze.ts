import { readFile, readdir, realpath, access } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { runProcess } from '../core/run-process.js';

/**
 * The filesystems a P2V copy must quiesce: those mounted from the device itself, from its
 * partitions, or from anything stacked on them (LVM, dm-crypt: sysfs `holders`). A copy
 * whose last pass runs with all of them frozen holds each filesystem as it was at one
 * moment, clean; otherwise it is only crash-consistent, and the agent says so.
 */
export interface MountedFilesystem {
  mountPoint: string;
  source: string;
  fsType: string;
}

/** Block devices (as sysfs names) the device, its partitions and its holders make up. */
export async function stackedDevices(device: string): Promise<Set<string>> {
  const out = new Set<string>();
  const top = basename(await realpath(device));
  const visit = async (name: string): Promise<void> => {
    if (out.has(name)) return;
    out.add(name);
    const dir = join('/sys/class/block', name);
    for (const entry of await readdir(dir).catch(() => [] as string[])) {
      if (await exists(join(dir, entry, 'partition'))) await visit(entry);
    }
    for (const holder of await readdir(join(dir, 'holders')).catch(() => [] as string[])) await visit(holder);
  };
  if (await exists(join('/sys/class/block', top))) await visit(top);
  return out;
}

/** Mounted filesystems on those devices, from /proc/self/mountinfo (matched by major:minor). */
export async function mountedFilesystems(device: string): Promise<MountedFilesystem[]> {
  const numbers = new Set<string>();
  for (const name of await stackedDevices(device)) {
    const dev = (await readFile(join('/sys/class/block', name, 'dev'), 'utf8').catch(() => '')).trim();
    if (dev) numbers.add(dev);
  }
  if (numbers.size === 0) return [];
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountedFilesystem[] = [];
  for (const line of text.split('\n')) {
    const m = parseMountInfoLine(line);
    if (m && numbers.has(m.majorMinor)) out.push({ mountPoint: m.mountPoint, source: m.source, fsType: m.fsType });
  }
  // One filesystem may be mounted at several places (bind mounts): freeze it once.
  const seen = new Set<string>();
  return out.filter((f) => {
    const key = `${f.source}\0${f.fsType}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Fields of one mountinfo line (proc(5)): id parent major:minor root mountpoint opts ... - fstype source superopts. */
export function parseMountInfoLine(
  line: string,
): { majorMinor: string; mountPoint: string; fsType: string; source: string } | null {
  const [left, right] = line.split(' - ');
  if (left === undefined || right === undefined) return null;
  const f = left.split(' ');
  const r = right.split(' ');
  if (f.length < 5 || r.length < 2) return null;
  return { majorMinor: f[2]!, mountPoint: unescapeMountField(f[4]!), fsType: r[0]!, source: unescapeMountField(r[1]!) };
}

/** mountinfo writes space, tab, newline and backslash as \ooo octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Freezes each filesystem (fsfreeze(8): FIFREEZE, which first flushes it) and returns those
 * frozen. If one refuses, those already frozen are thawed again and the reason returned:
 * a copy half frozen is no better than one not frozen at all.
 */
export async function freezeAll(
  filesystems: readonly MountedFilesystem[],
): Promise<{ frozen: string[]; failure?: string }> {
  const frozen: string[] = [];
  for (const f of filesystems) {
    try {
      await runProcess('fsfreeze', ['--freeze', f.mountPoint], { timeoutMs: 60_000 });
      frozen.push(f.mountPoint);
    } catch (e) {
      await thawAll(frozen);
      return { frozen: [], failure: `${f.mountPoint} (${f.fsType}) could not be frozen: ${(e as Error).message}` };
    }
  }
  return { frozen };
}

/** Thaws each mount point; one that is no longer frozen is not an error. Returns those that failed. */
export async function thawAll(mountPoints: readonly string[]): Promise<string[]> {
  const failed: string[] = [];
  for (const mp of [...mountPoints].reverse()) {
    await runProcess('fsfreeze', ['--unfreeze', mp], { timeoutMs: 30_000 }).catch((e: Error) => {
      if (!/Invalid argument/.test(e.message)) failed.push(`${mp}: ${e.message}`);
    });
  }
  return failed;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

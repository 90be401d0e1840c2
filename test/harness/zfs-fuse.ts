import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProcess } from '../../src/core/run-process.js';

/*
 * zfs-fuse for tests, on a machine without kernel ZFS. There can be only one zfs-fuse
 * daemon per machine (it locks /var/lock/zfs/zfs_lock and listens on the fixed socket
 * /var/run/zfs/zfs_socket, which every zfs and zpool command talks to), so test processes
 * running at once share one. Its users are counted by files, not by a number that a
 * crashed test would leave wrong:
 *
 *   STATE/lock/           a mkdir lock around every change below (owner: pid + start time)
 *   STATE/daemon.json     the daemon the harness started: pid + start time
 *   STATE/users/*.json    one per ZfsFuse: its pid + start time, its folder and its pools
 *
 * The first user starts the daemon (detached: it outlives any one test process), each
 * user records its pools before creating them, and the last one out destroys its pools and
 * stops the daemon by its pid. A user whose process is gone (a crashed test) is cleaned up
 * by whoever takes the lock next: its recorded pools destroyed (or, when the daemon died
 * with it, their dead FUSE mounts unmounted), its files removed. A daemon that was running
 * before the harness came (the system's zfs-fuse service) is used and never stopped. A
 * daemon with pools the harness did not make is left running.
 *
 * Each user's folder is a shared bind mount. A mount namespace made while a dataset is
 * mounted (every `ip netns exec` of the other tests running at the same time) gets a copy of
 * the mount; on this machine `/` is a private mount, so that copy would hold the dataset
 * busy (no destroy, no rollback) for as long as the namespace lives. Under a shared mount
 * the copy is a slave: the daemon's unmount reaches it too.
 */
const STATE_DIR = '/run/mamori-test-zfs-fuse';
const LOCK_DIR = join(STATE_DIR, 'lock');
const USERS_DIR = join(STATE_DIR, 'users');
const DAEMON_FILE = join(STATE_DIR, 'daemon.json');

interface ProcessId {
  pid: number;
  start: string;
}

interface PoolRecord {
  name: string;
  image: string;
  mountpoint: string;
}

interface UserRecord extends ProcessId {
  dir: string;
  pools: PoolRecord[];
}

export interface TestPool {
  name: string;
  /** Where the pool's root dataset is mounted; its filesystems mount below it. */
  mountpoint: string;
}

/** The start time of a process (field 22 of /proc/PID/stat), which tells it from a later one with the same pid. */
async function startTimeOf(pid: number): Promise<string | null> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? null : (fields[19] ?? null);
  } catch {
    return null;
  }
}

async function isAlive(p: ProcessId): Promise<boolean> {
  return p.start !== '' && (await startTimeOf(p.pid)) === p.start;
}

async function self(): Promise<ProcessId> {
  return { pid: process.pid, start: (await startTimeOf(process.pid)) ?? '' };
}

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(value));
  await rename(tmp, file);
}

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  await mkdir(STATE_DIR, { recursive: true });
  const me = await self();
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      await mkdir(LOCK_DIR);
      await writeFile(join(LOCK_DIR, 'owner'), JSON.stringify(me));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = await readJson<ProcessId>(join(LOCK_DIR, 'owner'));
      const age = Date.now() - ((await stat(LOCK_DIR).catch(() => null))?.mtimeMs ?? Date.now());
      // A holder that died (a crashed test) never unlocks: its lock is taken over. An owner
      // file not yet written is a holder between its two steps, unless that lasts.
      if ((owner && !(await isAlive(owner))) || (!owner && age > 10_000)) {
        await rm(LOCK_DIR, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new Error(`zfs-fuse harness: ${LOCK_DIR} held by ${JSON.stringify(owner)} for too long`);
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(LOCK_DIR, { recursive: true, force: true });
  }
}

async function zfsAnswers(): Promise<boolean> {
  try {
    await runProcess('zpool', ['list', '-H', '-o', 'name'], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

async function isOurDaemon(rec: ProcessId): Promise<boolean> {
  if (!(await isAlive(rec))) return false;
  const cmdline = await readFile(`/proc/${rec.pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0')[0]?.endsWith('zfs-fuse') ?? false;
}

/** The mount points at or under `dir` (dead FUSE mounts of a killed daemon included). */
async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  return text
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Whether `name` is imported and built on `image`: only then is it the pool the record speaks of. */
async function isPoolOn(name: string, image: string): Promise<boolean> {
  try {
    const { stdout } = await runProcess('zpool', ['status', name], { timeoutMs: 30_000 });
    return stdout.split('\n').some((l) => l.trim().split(/\s+/)[0] === image);
  } catch {
    return false;
  }
}

async function destroyPool(p: PoolRecord): Promise<void> {
  if (await isPoolOn(p.name, p.image)) {
    // FUSE releases a closed file a moment late: "busy" right after a test's last read.
    for (let i = 0; ; i++) {
      try {
        await runProcess('zpool', ['destroy', '-f', p.name], { timeoutMs: 60_000 });
        break;
      } catch (e) {
        if (i >= 40) throw e;
        await sleep(250);
      }
    }
  }
  // Dead mounts of a daemon that was killed with the pool imported.
  for (const m of (await mountsUnder(p.mountpoint)).reverse())
    await runProcess('umount', ['-l', m], { timeoutMs: 30_000 }).catch(() => undefined);
  await rm(p.image, { force: true });
}

/**
 * Removes what a user recorded: its pools, then its folder's own bind mount and the folder.
 * False when a pool could not be destroyed: the record stays, so a later user retries it.
 */
async function cleanUser(rec: UserRecord): Promise<boolean> {
  let whole = true;
  for (const p of rec.pools) {
    await destroyPool(p).catch((e: unknown) => {
      whole = false;
      process.stderr.write(`zfs-fuse harness: could not destroy pool ${p.name}: ${String(e)}\n`);
    });
  }
  if (!whole) return false;
  const left = await mountsUnder(rec.dir);
  if (left.length === 1 && left[0] === rec.dir)
    await runProcess('umount', [rec.dir], { timeoutMs: 30_000 }).catch(() => undefined);
  if ((await mountsUnder(rec.dir)).length === 0) await rm(rec.dir, { recursive: true, force: true });
  return true;
}

/** The folder bound onto itself and made shared (see the note at the top). */
async function makeSharedMount(dir: string): Promise<void> {
  await runProcess('mount', ['--bind', dir, dir], { timeoutMs: 30_000 });
  await runProcess('mount', ['--make-shared', dir], { timeoutMs: 30_000 });
}

async function userFiles(): Promise<string[]> {
  await mkdir(USERS_DIR, { recursive: true });
  return (await readdir(USERS_DIR)).filter((f) => f.endsWith('.json')).map((f) => join(USERS_DIR, f));
}

/** Cleans up after users whose process is gone; returns how many live users remain. */
async function pruneDeadUsers(): Promise<number> {
  let live = 0;
  for (const file of await userFiles()) {
    const rec = await readJson<UserRecord>(file);
    if (rec && (await isAlive(rec))) {
      live++;
      continue;
    }
    if (rec && !(await cleanUser(rec))) continue;
    await unlink(file).catch(() => undefined);
  }
  return live;
}

async function startDaemon(): Promise<void> {
  const log = await open(join(STATE_DIR, 'daemon.log'), 'a');
  try {
    // --no-daemon keeps the pid the one spawn returns (zfs-fuse writes no pid file then);
    // detached, so it outlives this test process when another one still uses it.
    const child = spawn('zfs-fuse', ['--no-daemon', '--no-kstat-mount'], {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
    });
    child.on('error', () => undefined); // ENOENT: reported below, by the missing pid
    const pid = child.pid;
    child.unref();
    if (pid === undefined)
      throw new Error('zfs-fuse harness: could not start zfs-fuse (is the zfs-fuse package installed?)');
    await sleep(100);
    const start = (await startTimeOf(pid)) ?? '';
    await writeJsonAtomic(DAEMON_FILE, { pid, start } satisfies ProcessId);
    const deadline = Date.now() + 20_000;
    while (!(await zfsAnswers())) {
      if (Date.now() > deadline || !(await isAlive({ pid, start }))) {
        if (await isAlive({ pid, start })) process.kill(pid, 'SIGKILL');
        await rm(DAEMON_FILE, { force: true });
        throw new Error(`zfs-fuse harness: zfs-fuse did not come up; see ${join(STATE_DIR, 'daemon.log')}`);
      }
      await sleep(100);
    }
  } finally {
    await log.close();
  }
}

async function stopDaemon(rec: ProcessId): Promise<void> {
  process.kill(rec.pid, 'SIGTERM');
  // zfs-fuse unmounts and syncs its pools on SIGTERM; a few seconds is usual.
  const deadline = Date.now() + 30_000;
  while (await isAlive(rec)) {
    if (Date.now() > deadline) {
      process.kill(rec.pid, 'SIGKILL');
      break;
    }
    await sleep(100);
  }
}

/**
 * One test's use of the shared zfs-fuse daemon and the pools it makes there.
 *
 *   const zfs = await ZfsFuse.acquire();
 *   after(() => zfs.release());
 *   const a = await zfs.createPool('a');   // mamori-<random>-a on a sparse file
 */
export class ZfsFuse {
  readonly #file: string;
  readonly #record: UserRecord;
  readonly #tag: string;

  private constructor(file: string, record: UserRecord, tag: string) {
    this.#file = file;
    this.#record = record;
    this.#tag = tag;
  }

  static async acquire(): Promise<ZfsFuse> {
    return withLock(async () => {
      await pruneDeadUsers();
      const daemon = await readJson<ProcessId>(DAEMON_FILE);
      if (!daemon || !(await isOurDaemon(daemon))) {
        await rm(DAEMON_FILE, { force: true });
        if (!(await zfsAnswers())) await startDaemon();
      }
      const tag = randomBytes(4).toString('hex');
      const dir = await mkdtemp(join(tmpdir(), `mamori-zfs-${tag}-`));
      const record: UserRecord = { ...(await self()), dir, pools: [] };
      const file = join(USERS_DIR, `${process.pid}-${tag}.json`);
      await mkdir(USERS_DIR, { recursive: true });
      // Recorded before the mount: a crash in between still leaves it findable.
      await writeJsonAtomic(file, record);
      await makeSharedMount(dir);
      return new ZfsFuse(file, record, tag);
    });
  }

  /** A pool `mamori-<tag>-<suffix>` on a sparse file of sizeMiB, mounted in this test's folder; not in zpool.cache. */
  async createPool(suffix: string, sizeMiB = 512): Promise<TestPool> {
    const name = `mamori-${this.#tag}-${suffix}`;
    const pool: PoolRecord = {
      name,
      image: join(this.#record.dir, `${suffix}.img`),
      mountpoint: join(this.#record.dir, `mnt-${suffix}`),
    };
    // Recorded before it exists: a crash right after the create still leaves it findable.
    this.#record.pools.push(pool);
    await writeJsonAtomic(this.#file, this.#record);
    await runProcess('truncate', ['-s', `${sizeMiB}M`, pool.image]);
    // cachefile=none: a later daemon must not try to import a pool whose file is gone.
    await runProcess('zpool', ['create', '-o', 'cachefile=none', '-m', pool.mountpoint, name, pool.image], {
      timeoutMs: 60_000,
    });
    return { name, mountpoint: pool.mountpoint };
  }

  /** Destroys exactly this test's pools; the last user stops the daemon the harness started. */
  async release(): Promise<void> {
    await withLock(async () => {
      // A pool still busy keeps its record: whoever takes the lock after this process is gone retries it.
      if (await cleanUser(this.#record)) await unlink(this.#file).catch(() => undefined);
      const live = await pruneDeadUsers();
      const daemon = await readJson<ProcessId>(DAEMON_FILE);
      if (live > 0 || !daemon) return;
      if (!(await isOurDaemon(daemon))) {
        await rm(DAEMON_FILE, { force: true });
        return;
      }
      const { stdout } = await runProcess('zpool', ['list', '-H', '-o', 'name'], { timeoutMs: 30_000 }).catch(() => ({
        stdout: '',
      }));
      const others = stdout.split('\n').filter((n) => n.trim() !== '');
      if (others.length > 0) {
        process.stderr.write(
          `zfs-fuse harness: leaving zfs-fuse (pid ${daemon.pid}) running for pools it did not make: ${others.join(', ')}\n`,
        );
        return;
      }
      await stopDaemon(daemon);
      await rm(DAEMON_FILE, { force: true });
    });
  }
}

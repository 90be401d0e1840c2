import { chown, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { runProcess } from '../../src/core/run-process.js';

/** The OS user the cluster runs as when we are root: initdb and postgres refuse to run as root. */
const CLUSTER_USER = 'postgres';
/** The database role the tests connect as (a superuser of the throwaway cluster, with a password). */
const ROLE = 'mamori';

/**
 * A throwaway PostgreSQL cluster: initdb into a temporary folder, the server started by
 * pg_ctl on a unix socket in that folder and no TCP at all, stopped by its pid and the
 * folder removed by stop(). Connections use a password (scram), so tests can check that
 * it never shows in logs.
 */
export class PgCluster {
  readonly dir: string;
  readonly password: string;
  readonly pid: number;
  #databases = 0;

  private constructor(dir: string, password: string, pid: number) {
    this.dir = dir;
    this.password = password;
    this.pid = pid;
  }

  static async start(): Promise<PgCluster> {
    const bin = await postgresBinDir();
    const dir = await mkdtemp(join(tmpdir(), 'mamori-pg-'));
    try {
      const password = randomBytes(12).toString('hex');
      const asRoot = userInfo().uid === 0;
      const owner = asRoot ? await osUser(CLUSTER_USER) : null;
      if (owner) await chown(dir, owner.uid, owner.gid);
      const pwfile = join(dir, 'pwfile');
      await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
      if (owner) await chown(pwfile, owner.uid, owner.gid);
      const run = (file: string, args: string[]): Promise<unknown> =>
        asRoot
          ? runProcess('runuser', ['-u', CLUSTER_USER, '--', join(bin, file), ...args], { timeoutMs: 120_000 })
          : runProcess(join(bin, file), args, { timeoutMs: 120_000 });
      // --no-locale: no locale data needed; text columns collate "C" themselves (src/store/migrations.ts).
      await run('initdb', [
        '-D',
        join(dir, 'data'),
        '-U',
        ROLE,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--no-locale',
        '-E',
        'UTF8',
        '--no-sync',
      ]);
      await rm(pwfile);
      // listen_addresses='': no TCP; the socket lives in the folder, so clusters never collide.
      const options = `-c listen_addresses= -k ${dir} -c fsync=off -c full_page_writes=off`;
      await run('pg_ctl', [
        '-D',
        join(dir, 'data'),
        '-l',
        join(dir, 'server.log'),
        '-o',
        options,
        '-w',
        '-t',
        '60',
        'start',
      ]);
      const pid = Number((await readFile(join(dir, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]);
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`pg-cluster: no postmaster pid in ${dir}`);
      return new PgCluster(dir, password, pid);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** A connection URL for `database` (the socket folder in ?host=, as libpq and node-postgres read it). */
  url(database = 'postgres'): string {
    return `postgresql://${ROLE}:${this.password}@localhost/${database}?host=${encodeURIComponent(this.dir)}`;
  }

  /** A new empty database, so each test starts from nothing; returns its URL. */
  async createDatabase(prefix = 't'): Promise<string> {
    this.#databases += 1;
    const name = `${prefix}_${this.#databases}`;
    const client = new pg.Client({ connectionString: this.url() });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${name}`);
    } finally {
      await client.end();
    }
    return this.url(name);
  }

  /** The server's own log (what it wrote about connections and errors). */
  async serverLog(): Promise<string> {
    const logs = await readdir(this.dir).catch(() => [] as string[]);
    return logs.includes('server.log') ? readFile(join(this.dir, 'server.log'), 'utf8') : '';
  }

  /** Fast shutdown of the postmaster by its pid, waits for it to exit, removes the folder. */
  async stop(): Promise<void> {
    if (alive(this.pid)) {
      process.kill(this.pid, 'SIGINT');
      const until = Date.now() + 60_000;
      while (alive(this.pid)) {
        if (Date.now() > until) {
          process.kill(this.pid, 'SIGKILL');
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PostgreSQL's server binaries: `pg_config --bindir`, else the newest /usr/lib/postgresql/N/bin (Debian's layout). */
export async function postgresBinDir(): Promise<string> {
  const fromConfig = await runProcess('pg_config', ['--bindir'], { timeoutMs: 10_000 }).then(
    (r) => r.stdout.trim(),
    () => '',
  );
  if (fromConfig !== '' && (await exists(join(fromConfig, 'initdb')))) return fromConfig;
  const versions = (await readdir('/usr/lib/postgresql').catch(() => [] as string[]))
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const dir = join('/usr/lib/postgresql', v, 'bin');
    if (await exists(join(dir, 'initdb'))) return dir;
  }
  throw new Error(
    "pg-cluster: no PostgreSQL server binaries (initdb); run `make setup` (it installs Debian's postgresql)",
  );
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function osUser(name: string): Promise<{ uid: number; gid: number }> {
  const r = await runProcess('id', ['-u', name], { timeoutMs: 10_000 });
  const g = await runProcess('id', ['-g', name], { timeoutMs: 10_000 });
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

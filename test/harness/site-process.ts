import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './repo-root.js';
import type { NetNs } from './netns.js';
import { parseSerialAcks } from '../../src/guest/serial-log.js';

export const MAMORI_BIN = join(repoRoot, 'bin', 'mamori');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface SiteProcessOptions {
  /** Run the server and the CLI inside this network namespace (two-sites.ts). */
  netns?: NetNs;
  /** HOST:PORT for `serve --listen` (default 127.0.0.1:0). */
  listen?: string;
  /** More `serve` arguments, e.g. ['--insecure-http']. */
  serveArgs?: string[];
  /**
   * The site's database as a PostgreSQL URL (`serve --db`, e.g. PgCluster.createDatabase()); default:
   * SQLite in the data folder. A cluster on a unix socket serves a site in a network namespace too:
   * the socket is a file, and `ip netns exec` shares the host's /tmp.
   */
  db?: string;
}

/**
 * A real `mamori serve` in its own process and data folder, driven through the real CLI.
 * Tracks every QEMU pid it saw so cleanup kills exactly those, never by pattern.
 */
export class SiteProcess {
  readonly dataDir: string;
  readonly name: string;
  readonly netns: NetNs | undefined;
  readonly listen: string;
  readonly serveArgs: string[];
  /** The PostgreSQL URL the site serves from, or undefined for SQLite (mamori.db in the data folder). */
  readonly db: string | undefined;
  #server: ChildProcess | null = null;
  #serverLog = '';
  #qemuPids = new Set<number>();
  url = '';

  private constructor(dataDir: string, name: string, opts: SiteProcessOptions) {
    this.dataDir = dataDir;
    this.name = name;
    this.netns = opts.netns;
    this.listen = opts.listen ?? '127.0.0.1:0';
    this.db = opts.db;
    this.serveArgs = [...(opts.db ? ['--db', opts.db] : []), ...(opts.serveArgs ?? [])];
  }

  static async create(name = 'site-a', opts: SiteProcessOptions = {}): Promise<SiteProcess> {
    const dir = await mkdtemp(join(tmpdir(), 'mamori-it-'));
    return new SiteProcess(dir, name, opts);
  }

  /** The site's CA certificate (PEM), for MAMORI_CA. */
  get caCertFile(): string {
    return join(this.dataDir, 'tls', 'ca-cert.pem');
  }

  async adminToken(): Promise<string> {
    return (await readFile(join(this.dataDir, 'admin-token'), 'utf8')).trim();
  }

  get serverLog(): string {
    return this.#serverLog;
  }

  get serverPid(): number | undefined {
    return this.#server?.pid;
  }

  /** Starts `mamori serve`; `env` adds to its environment (MAMORI_FAULT_POINTS for a test that cuts an operation). */
  async start(env: Record<string, string> = {}): Promise<void> {
    await rm(join(this.dataDir, 'url'), { force: true });
    // Tests make their images and fixtures in the system's temporary folder: the site's
    // exchange folder here (its own data folder, also in there, stays refused).
    const argv = [
      MAMORI_BIN,
      'serve',
      '--data',
      this.dataDir,
      '--listen',
      this.listen,
      '--name',
      this.name,
      '--allow-import',
      tmpdir(),
      ...this.serveArgs,
    ];
    const [file, args] = this.netns ? this.netns.wrap(process.execPath, argv) : [process.execPath, argv];
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MAMORI_ACCEL: process.env['MAMORI_ACCEL'] ?? 'tcg', MAMORI_LOG_LEVEL: 'info', ...env },
    });
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.#serverLog += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.#serverLog += c));
    this.#server = child;
    // A readiness wait, not a timing check: with ten TCG guests of another test file on the
    // same two cores, a start that takes 2 s alone has been seen to take over 30 s.
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`mamori serve exited ${child.exitCode}:\n${this.#serverLog}`);
      const url = await readFile(join(this.dataDir, 'url'), 'utf8').catch(() => '');
      if (url.trim()) {
        this.url = url.trim();
        return;
      }
      await sleep(100);
    }
    throw new Error(`mamori serve did not come up:\n${this.#serverLog}`);
  }

  /** Waits for the server to end by itself (a fault point killed it); false if it is still up after `timeoutMs`. */
  async serverExited(timeoutMs: number): Promise<boolean> {
    const child = this.#server;
    if (!child || child.exitCode !== null || child.signalCode !== null) return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** kill -9 the server: what a crash looks like. VMs must survive it. */
  async crashServer(): Promise<void> {
    const child = this.#server;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    this.#server = null;
  }

  async stopServer(): Promise<void> {
    const child = this.#server;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    // A server that does not stop within 20 s is killed: a test must never hang on cleanup.
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
    this.#server = null;
  }

  /** The pids of the QEMUs this site runs, as `vm list --json` tells (empty if the server is down). */
  async vmPids(): Promise<number[]> {
    const r = await this.cli('vm', 'list', '--json').catch(() => undefined);
    if (!r || r.code !== 0) return [];
    try {
      return (JSON.parse(r.stdout) as { pid?: unknown }[])
        .map((v) => v.pid)
        .filter((p): p is number => typeof p === 'number');
    } catch {
      return [];
    }
  }

  async cli(...args: string[]): Promise<CliResult> {
    return runCli(['--data', this.dataDir, ...args], process.env, this.netns);
  }

  /** Runs the CLI with --json and parses its output; throws with the CLI's message on failure. */
  async cliJson<T>(...args: string[]): Promise<T> {
    const r = await this.cli(...args, '--json');
    // A command can fail with nothing on stderr (replicate verify exits 1 on an inconsistent log): its report is on stdout.
    if (r.code !== 0)
      throw new Error(`mamori ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout.slice(0, 4000)}`);
    const out = JSON.parse(r.stdout) as T;
    this.#notePids(out);
    return out;
  }

  #notePids(out: unknown): void {
    const list = Array.isArray(out) ? out : [out, (out as { vm?: unknown })?.vm];
    for (const v of list) {
      const pid = (v as { pid?: unknown } | undefined)?.pid;
      if (typeof pid === 'number') this.#qemuPids.add(pid);
    }
  }

  trackPid(pid: number): void {
    this.#qemuPids.add(pid);
  }

  async waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await fn();
        if (v) return v;
      } catch (e) {
        last = e;
      }
      await sleep(250);
    }
    throw new Error(
      `timed out waiting for ${what}${last ? `: ${String(last)}` : ''}\nserver warnings:\n${this.#warnings()}\nserver log:\n${this.#serverLog.slice(-3000)}`,
    );
  }

  /**
   * Waits until the test guest writing to `serialLog` acknowledged `count` records (with
   * `after`: records past that sequence number). On timeout the guest's own lines lead the
   * report (an I/O error the write log met shows there), with its last heartbeat and last
   * acknowledged record, which tell a guest that stopped from one that only writes slowly.
   */
  async waitForAcks(
    what: string,
    serialLog: string,
    count: number,
    opts: { after?: number; timeoutMs?: number } = {},
  ): Promise<void> {
    const after = opts.after ?? 0;
    try {
      await this.waitFor(
        what,
        async () =>
          parseSerialAcks(await readFile(serialLog, 'utf8')).filter((s) => s > after).length >= count || undefined,
        opts.timeoutMs ?? 120_000,
      );
    } catch (e) {
      const lines = (await readFile(serialLog, 'utf8').catch(() => '')).split('\n');
      const guest = lines
        .filter((l) => !l.startsWith('mamori-hb') && !l.startsWith('mamori-wl ack'))
        .slice(-15)
        .join('\n');
      const lastHb = lines.filter((l) => l.startsWith('mamori-hb')).at(-1) ?? '(no heartbeat)';
      const lastAck = lines.filter((l) => l.startsWith('mamori-wl ack')).at(-1) ?? '(no ack)';
      throw new Error(
        `guest serial (its own lines, last 15):\n${guest}\nlast heartbeat: ${lastHb}\nlast ack: ${lastAck} (at ${new Date().toISOString()})\n${(e as Error).message}`,
      );
    }
  }

  /** The server's warnings and errors (pino level 40 and up), last first: a truncated report still shows them. */
  #warnings(): string {
    const lines = this.#serverLog.split('\n').filter((l) => /^\{"level":[4-6]0,/.test(l));
    return lines.reverse().join('\n').slice(0, 3000) || '(none)';
  }

  /** Kills the QEMUs this test saw (by pid), the server, and removes the data folder. */
  async destroy(): Promise<void> {
    await this.crashServer();
    // MAMORI_TEST_LOG_DIR keeps each server's log after the test (the data folder goes, unless
    // MAMORI_TEST_KEEP_DATA is set).
    const keep = process.env['MAMORI_TEST_LOG_DIR'];
    if (keep)
      await writeFile(join(keep, `${this.name}-${process.pid}-${Date.now()}.log`), this.#serverLog).catch(
        () => undefined,
      );
    for (const pid of this.#qemuPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    // Storage daemons (a replication cycle or a replica's NBD server in flight) and QEMUs this
    // test never listed outlive the server too: stop every process named by a pid file in this
    // site's folder whose command line points into the folder (so a reused pid is left alone).
    for (const pid of await pidsOwnedBy(this.dataDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    // MAMORI_TEST_KEEP_DATA keeps the data folder too (its QEMUs and daemons are stopped all the
    // same): a flaky loss is read from the images it left, layer by layer.
    if (process.env['MAMORI_TEST_KEEP_DATA']) return;
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** The real CLI in a child process; inside a namespace when given one (the root namespace cannot reach its addresses). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = process.env, netns?: NetNs): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const [file, argv] = netns
      ? netns.wrap(process.execPath, [MAMORI_BIN, ...args])
      : [process.execPath, [MAMORI_BIN, ...args]];
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function pidsOwnedBy(dir: string): Promise<number[]> {
  const out: number[] = [];
  const files = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  for (const f of files.filter((x) => x.endsWith('.pid'))) {
    const pid = Number((await readFile(join(dir, f), 'utf8').catch(() => '')).trim());
    if (!(pid > 0)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) out.push(pid);
  }
  return out;
}

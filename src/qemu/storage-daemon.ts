import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { QmpClient } from './qmp-client.js';
import type { QmpBlockExportAddArgs } from './qmp-types.js';
import { chainBlockdevs, type DaemonChain } from './daemon-chain.js';

export const QEMU_STORAGE_DAEMON = process.env['MAMORI_QEMU_STORAGE_DAEMON'] ?? 'qemu-storage-daemon';

export interface DaemonExport {
  id: string;
  /** The node to export: a chain's `id`, or any node name. */
  node: string;
  /** NBD export name (defaults to `id`). */
  name?: string;
  writable?: boolean;
  /** Dirty bitmaps of the node (or its backing chain) offered as `qemu:dirty-bitmap:NAME`. */
  bitmaps?: string[];
}

export type NbdListenAddress = { type: 'unix'; path: string } | { type: 'inet'; host: string; port: number };

/** x509 credentials: `dir` holds ca-cert.pem, server-cert.pem, server-key.pem. */
export interface DaemonTls {
  dir: string;
  /** Require a client certificate signed by the CA (default true). */
  verifyPeer?: boolean;
  /**
   * Accept only the client certificate with this distinguished name, as GnuTLS prints it
   * (e.g. `CN=site-b`): an `authz-simple` object bound to the NBD server.
   */
  clientIdentity?: string;
}

export interface StorageDaemonConfig {
  qmpSocket: string;
  pidFile: string;
  chains: DaemonChain[];
  nbd?: { listen: NbdListenAddress; tls?: DaemonTls; maxConnections?: number };
  exports?: DaemonExport[];
}

export interface StorageDaemonStartOptions {
  timeoutMs?: number;
  qmpConnectTimeoutMs?: number;
}

export const TLS_CREDS_ID = 'tls0';
export const TLS_AUTHZ_ID = 'authz0';

/**
 * The command line of a storage daemon: a pure function of its config (unit-tested).
 * Everything but the chardev is given as JSON so paths need no QemuOpts escaping.
 */
export function buildStorageDaemonArgv(config: StorageDaemonConfig): string[] {
  const argv = [
    '--chardev',
    `socket,id=qmp0,path=${escapeOpt(config.qmpSocket)},server=on,wait=off`,
    '--monitor',
    'chardev=qmp0',
    '--pidfile',
    config.pidFile,
    '--daemonize',
  ];
  const nbd = config.nbd;
  if (nbd?.tls !== undefined) {
    argv.push(
      '--object',
      json({
        'qom-type': 'tls-creds-x509',
        id: TLS_CREDS_ID,
        dir: nbd.tls.dir,
        endpoint: 'server',
        'verify-peer': nbd.tls.verifyPeer ?? true,
      }),
    );
    if (nbd.tls.clientIdentity !== undefined) {
      argv.push('--object', json({ 'qom-type': 'authz-simple', id: TLS_AUTHZ_ID, identity: nbd.tls.clientIdentity }));
    }
  }
  for (const chain of config.chains) for (const node of chainBlockdevs(chain)) argv.push('--blockdev', json(node));
  if (nbd !== undefined) {
    const addr =
      nbd.listen.type === 'unix'
        ? { type: 'unix', path: nbd.listen.path }
        : { type: 'inet', host: nbd.listen.host, port: String(nbd.listen.port) };
    const server: Record<string, unknown> = { addr };
    if (nbd.tls !== undefined) server['tls-creds'] = TLS_CREDS_ID;
    if (nbd.tls?.clientIdentity !== undefined) server['tls-authz'] = TLS_AUTHZ_ID;
    if (nbd.maxConnections !== undefined) server['max-connections'] = nbd.maxConnections;
    argv.push('--nbd-server', json(server));
  }
  for (const e of config.exports ?? []) {
    if (nbd === undefined)
      throw new MamoriError('INVALID_INPUT', `export ${e.id} needs an NBD server in the config`, {
        details: { export: e.id },
      });
    argv.push('--export', json(exportArgs(e)));
  }
  return argv;
}

function exportArgs(e: DaemonExport): QmpBlockExportAddArgs {
  const args: QmpBlockExportAddArgs = {
    type: 'nbd',
    id: e.id,
    'node-name': e.node,
    name: e.name ?? e.id,
    writable: e.writable ?? false,
  };
  if (e.bitmaps !== undefined && e.bitmaps.length > 0) args.bitmaps = e.bitmaps;
  return args;
}

/**
 * A qemu-storage-daemon serving image chains over NBD. It runs daemonized (like our VMs it
 * outlives the site server); `attach` finds it again by pid file and QMP socket.
 */
export class StorageDaemon {
  readonly #qmpSocket: string;
  readonly #pidFile: string;
  readonly #pid: number;
  readonly #qmp: QmpClient;

  private constructor(qmpSocket: string, pidFile: string, pid: number, qmp: QmpClient) {
    this.#qmpSocket = qmpSocket;
    this.#pidFile = pidFile;
    this.#pid = pid;
    this.#qmp = qmp;
  }

  static async start(config: StorageDaemonConfig, options: StorageDaemonStartOptions = {}): Promise<StorageDaemon> {
    const argv = buildStorageDaemonArgv(config);
    const previous = await readPid(config.pidFile);
    if (previous !== null && (await isStorageDaemon(previous, config.qmpSocket))) {
      throw new MamoriError(
        'DISK_IN_USE',
        `a qemu-storage-daemon (pid ${previous}) already serves ${config.qmpSocket}; attach to it or stop it first`,
        { details: { pid: previous, qmpSocket: config.qmpSocket, wanted: 'STORAGE_DAEMON_RUNNING' } },
      );
    }
    await rm(config.qmpSocket, { force: true });
    await rm(config.pidFile, { force: true });
    if (config.nbd?.listen.type === 'unix') await rm(config.nbd.listen.path, { force: true });
    await launch(argv, options.timeoutMs ?? 30_000);
    const pid = await readPid(config.pidFile);
    if (pid === null) {
      throw daemonError(
        'QEMU_START_FAILED',
        'STORAGE_DAEMON_START_FAILED',
        `qemu-storage-daemon started but wrote no pid file at ${config.pidFile}`,
        { pidFile: config.pidFile },
      );
    }
    try {
      const qmp = await QmpClient.connect(config.qmpSocket, {
        connectTimeoutMs: options.qmpConnectTimeoutMs ?? 5_000,
        retryUntilMs: 5_000,
      });
      return new StorageDaemon(config.qmpSocket, config.pidFile, pid, qmp);
    } catch (e) {
      // It started but we cannot drive it: do not leave an unmanaged daemon behind.
      if (await isStorageDaemon(pid, config.qmpSocket)) process.kill(pid, 'SIGKILL');
      throw e;
    }
  }

  /** Re-attaches to a daemon started earlier (e.g. before a server restart). */
  static async attach(
    where: { qmpSocket: string; pidFile: string },
    options: { connectTimeoutMs?: number } = {},
  ): Promise<StorageDaemon> {
    const pid = await readPid(where.pidFile);
    if (pid === null || !(await isStorageDaemon(pid, where.qmpSocket))) {
      throw daemonError(
        'QMP_DISCONNECTED',
        'STORAGE_DAEMON_NOT_RUNNING',
        `no qemu-storage-daemon runs for ${where.qmpSocket} (pid file ${where.pidFile}); start a new one`,
        { ...where, pid },
      );
    }
    const qmp = await QmpClient.connect(where.qmpSocket, {
      connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
      retryUntilMs: 2_000,
    });
    return new StorageDaemon(where.qmpSocket, where.pidFile, pid, qmp);
  }

  /**
   * SIGKILLs a daemon left behind by a dead owner (no QMP needed: the pid file and the
   * daemon's command line identify it). Returns whether one was running.
   */
  static async killLeftover(where: { qmpSocket: string; pidFile: string }, timeoutMs = 10_000): Promise<boolean> {
    const pid = await readPid(where.pidFile);
    if (pid === null || !(await isStorageDaemon(pid, where.qmpSocket))) return false;
    try {
      process.kill(pid, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
    if (!(await waitGone(pid, where.qmpSocket, timeoutMs))) {
      throw new MamoriError('PROCESS_TIMEOUT', `qemu-storage-daemon pid ${pid} did not exit after SIGKILL`, {
        details: { pid },
      });
    }
    if ((await readPid(where.pidFile)) === pid) await rm(where.pidFile, { force: true });
    // A killed daemon leaves its QMP socket file too; nothing listens on it any more.
    await rm(where.qmpSocket, { force: true });
    return true;
  }

  get pid(): number {
    return this.#pid;
  }

  get qmpSocket(): string {
    return this.#qmpSocket;
  }

  get pidFile(): string {
    return this.#pidFile;
  }

  /** The daemon's QMP client, for block-export-add/del, query-block-exports and the like. */
  qmp(): QmpClient {
    return this.#qmp;
  }

  async isAlive(): Promise<boolean> {
    return isStorageDaemon(this.#pid, this.#qmpSocket);
  }

  async addExport(e: DaemonExport): Promise<void> {
    await this.#qmp.execute('block-export-add', exportArgs(e), { timeoutMs: 10_000 });
  }

  /**
   * Removes an export and waits until it is gone; `hard` drops connected clients. With clients
   * connected the export shuts down after the command returns: BLOCK_EXPORT_DELETED says when,
   * without polling query-block-exports (one round trip per 50 ms, on every cycle's path).
   */
  async removeExport(id: string, mode: 'safe' | 'hard' = 'safe', timeoutMs = 10_000): Promise<void> {
    const gone = this.#qmp.waitForEvent('BLOCK_EXPORT_DELETED', { timeoutMs, predicate: (ev) => ev.data.id === id });
    gone.catch(() => undefined);
    await this.#qmp.execute('block-export-del', { id, mode }, { timeoutMs });
    await gone.catch((e: unknown) => {
      if (!isMamoriError(e, 'QMP_TIMEOUT')) throw e;
      throw new MamoriError('QMP_TIMEOUT', `export ${id} was still shutting down after ${timeoutMs} ms`, {
        details: { export: id, timeoutMs },
        cause: e,
      });
    });
  }

  async exportIds(): Promise<string[]> {
    const list = (await this.#qmp.execute('query-block-exports', undefined, { timeoutMs: 5_000 })) as { id: string }[];
    return list.map((e) => e.id);
  }

  /**
   * Clean stop: `quit` closes every image (qcow2 metadata written, persistent bitmaps
   * stored), then waits for the process to go; SIGKILL if it does not within timeoutMs.
   * Returns true when it exited by itself.
   */
  async stop(timeoutMs = 15_000): Promise<boolean> {
    if (!(await this.isAlive())) {
      await this.#qmp.close();
      return true;
    }
    try {
      if (!this.#qmp.connected) await this.#qmp.reconnect({ retryUntilMs: 2_000 });
      await this.#qmp.execute('quit', undefined, { timeoutMs: 5_000 });
    } catch (e) {
      // quit closes the socket, which can race its reply; the exit below is what counts.
      if (!isMamoriError(e, 'QMP_DISCONNECTED') && !isMamoriError(e, 'QMP_TIMEOUT')) throw e;
    }
    await this.#qmp.close();
    if (await waitGone(this.#pid, this.#qmpSocket, timeoutMs)) return true;
    await this.kill();
    return false;
  }

  /** SIGKILL by its own pid (checked to still be this daemon), then waits for it to go. */
  async kill(timeoutMs = 10_000): Promise<void> {
    if (await isStorageDaemon(this.#pid, this.#qmpSocket)) {
      try {
        process.kill(this.#pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
      }
    }
    await this.#qmp.close();
    if (!(await waitGone(this.#pid, this.#qmpSocket, timeoutMs))) {
      throw new MamoriError('PROCESS_TIMEOUT', `qemu-storage-daemon pid ${this.#pid} did not exit after SIGKILL`, {
        details: { pid: this.#pid },
      });
    }
    // A killed daemon leaves its pid file; remove it (if still ours) so a later attach cannot find a recycled pid.
    if ((await readPid(this.#pidFile)) === this.#pid) await rm(this.#pidFile, { force: true });
  }
}

/**
 * True if `pid` is alive, not a zombie, and is the storage daemon whose QMP socket is
 * `qmpSocket` (its command line carries the path), so a recycled pid is never taken for it.
 */
export async function isStorageDaemon(pid: number, qmpSocket: string): Promise<boolean> {
  try {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && cmdline.includes(`socket,id=qmp0,path=${escapeOpt(qmpSocket)},server=on,wait=off`);
  } catch {
    return false;
  }
}

async function waitGone(pid: number, qmpSocket: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isStorageDaemon(pid, qmpSocket))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !(await isStorageDaemon(pid, qmpSocket));
}

/** Runs the launcher: with --daemonize it exits 0 once images, sockets and exports are open. */
function launch(argv: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(QEMU_STORAGE_DAEMON, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        daemonError(
          'QEMU_START_FAILED',
          'STORAGE_DAEMON_START_FAILED',
          `qemu-storage-daemon did not finish starting within ${timeoutMs} ms`,
          { timeoutMs },
        ),
      );
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(
        daemonError(
          'QEMU_START_FAILED',
          'STORAGE_DAEMON_START_FAILED',
          `could not run ${QEMU_STORAGE_DAEMON}: ${e.message}; install Debian's qemu-system-common (it ships qemu-storage-daemon)`,
          {},
          e,
        ),
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) {
        resolve();
        return;
      }
      const why = stderr.trim().split('\n').filter(Boolean).slice(-3).join(' ') || `exit ${String(code)}`;
      reject(
        daemonError(
          'QEMU_START_FAILED',
          'STORAGE_DAEMON_START_FAILED',
          `qemu-storage-daemon refused to start: ${why}`,
          { exitCode: code, stderr },
        ),
      );
    });
  });
}

async function readPid(pidFile: string): Promise<number | null> {
  try {
    const n = Number((await readFile(pidFile, 'utf8')).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Errors carry the code they will get once the registry has it (`details.wanted`);
 * until then they use the nearest existing code.
 */
function daemonError(
  code: 'QEMU_START_FAILED' | 'QMP_DISCONNECTED',
  wanted: string,
  message: string,
  details: Record<string, unknown>,
  cause?: unknown,
): MamoriError {
  return new MamoriError(code, message, { details: { ...details, wanted }, cause });
}

/** QemuOpts values escape a comma by doubling it. */
function escapeOpt(value: string): string {
  return value.replaceAll(',', ',,');
}

function json(v: unknown): string {
  return JSON.stringify(v);
}

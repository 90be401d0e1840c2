import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import type { JournalPointServer } from './journal-point-server.js';

/*
 * The points in time this (the recovery) site serves to VMs recovered at them (instant
 * recovery: instant-recovery.ts). One JournalPointServer per replica and instant, shared by the
 * VMs that stand on it (a group recovered at one instant), closed when the last of them lets go.
 *
 * A VM finds its export through its overlay's header: the backing is a `json:` NBD name with
 * the export's socket. The socket's folder is a function of the replica and the instant, so
 * after a restart of the server the same export comes back where the header says, and a VM that
 * kept running reconnects to it (the name asks QEMU to wait `RECONNECT_SECONDS` for it).
 */

/** How long a VM's reads of its export wait for the server to come back (a restart) before they fail. */
export const RECONNECT_SECONDS = 300;

/** Unix socket paths are at most 107 bytes. */
const MAX_SOCKET_PATH = 107;

export interface PointExportKey {
  replicaId: string;
  /** The checkpoint's time, µs since the epoch. */
  timeUs: number;
}

/** What an export-backed overlay's header names, parsed back. */
export interface ExportBacking {
  socketPath: string;
  exportName: string;
}

/**
 * The backing name of an export-backed overlay: raw over an NBD client of the export on a unix
 * socket (the format is raw, as `-F raw` pins it; QEMU wants it outermost), which waits up to
 * `reconnectSeconds` for the server when the connection drops.
 */
export function exportBackingName(socketPath: string, exportName: string, reconnectSeconds: number): string {
  return `json:${JSON.stringify({
    driver: 'raw',
    file: {
      driver: 'nbd',
      server: { type: 'unix', path: socketPath },
      export: exportName,
      'reconnect-delay': reconnectSeconds,
    },
  })}`;
}

export class PointInTimeExports {
  readonly #root: string;
  readonly #open: (key: PointExportKey, dir: string) => Promise<JournalPointServer>;
  readonly #served = new Map<
    string,
    { key: PointExportKey; server: Promise<JournalPointServer>; users: Set<string> }
  >();
  /** Users whose VM is still being made (no record of it yet): not to be taken for gone. */
  readonly #pending = new Set<string>();

  /**
   * `root`: the folder the exports' sockets live in (short: socket paths are); `open` starts the
   * server of one instant in `dir` (the caller's lock keeps the replica's base still meanwhile).
   */
  constructor(deps: { root: string; open: (key: PointExportKey, dir: string) => Promise<JournalPointServer> }) {
    this.#root = deps.root;
    this.#open = deps.open;
  }

  /** The export's folder: the same for the same instant, across restarts. */
  folder(key: PointExportKey): string {
    const name = createHash('sha256').update(`${key.replicaId}@${key.timeUs}`).digest('hex').slice(0, 16);
    return join(this.#root, name);
  }

  /** The backing name an overlay's header gives for disk `exportName` of the instant. */
  backingName(key: PointExportKey, exportName: string): string {
    const path = join(this.folder(key), 'point.sock');
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH)
      throw new MamoriError(
        'INVALID_INPUT',
        `the data folder's path is too long for a point-in-time export's socket (${path}): use a data folder of at most 60 characters`,
      );
    return exportBackingName(path, exportName, RECONNECT_SECONDS);
  }

  /** The export an overlay's backing name points at, when it is one of this site's; null otherwise. */
  parseBacking(backing: string | null): ExportBacking | null {
    if (backing === null || !backing.startsWith('json:')) return null;
    let spec: unknown;
    try {
      spec = JSON.parse(backing.slice('json:'.length));
    } catch {
      return null;
    }
    const s = (spec as { driver?: unknown; file?: unknown }).file as
      { driver?: unknown; server?: { path?: unknown }; export?: unknown } | undefined;
    if (s === undefined || s.driver !== 'nbd' || typeof s.server?.path !== 'string' || typeof s.export !== 'string')
      return null;
    if (!s.server.path.startsWith(this.#root + '/')) return null;
    return { socketPath: s.server.path, exportName: s.export };
  }

  /**
   * Serves the instant (if not yet) for `user` (a VM's id); the instant served is the server's.
   * `pending`: the user's VM is being made; it counts among users() once confirmed.
   */
  async acquire(key: PointExportKey, user: string, options: { pending?: boolean } = {}): Promise<JournalPointServer> {
    if (options.pending === true) this.#pending.add(user);
    const k = `${key.replicaId}@${key.timeUs}`;
    let entry = this.#served.get(k);
    if (entry === undefined) {
      const server = this.#open(key, this.folder(key));
      entry = { key, server, users: new Set() };
      this.#served.set(k, entry);
      server.catch(() => {
        if (this.#served.get(k) === entry) this.#served.delete(k);
      });
    }
    entry.users.add(user);
    try {
      return await entry.server;
    } catch (e) {
      entry.users.delete(user);
      this.#pending.delete(user);
      throw e;
    }
  }

  /** The user's VM is on record now: from here on it is one of users(). */
  confirm(user: string): void {
    this.#pending.delete(user);
  }

  /** The confirmed users of every export served, with their instant. */
  users(): { user: string; key: PointExportKey }[] {
    return [...this.#served.values()].flatMap((e) =>
      [...e.users].filter((user) => !this.#pending.has(user)).map((user) => ({ user, key: e.key })),
    );
  }

  /** `user` lets go of its export; the last one out closes it. Idempotent. */
  async release(user: string): Promise<void> {
    this.#pending.delete(user);
    for (const [k, entry] of [...this.#served]) {
      if (!entry.users.delete(user) || entry.users.size > 0) continue;
      this.#served.delete(k);
      await this.#close(entry);
    }
  }

  /** At shutdown: every export closes (the VMs on them wait for the next start to serve them again). */
  async closeAll(): Promise<void> {
    const all = [...this.#served.values()];
    this.#served.clear();
    this.#pending.clear();
    for (const entry of all) await this.#close(entry);
  }

  async #close(entry: { key: PointExportKey; server: Promise<JournalPointServer> }): Promise<void> {
    const server = await entry.server.catch(() => null);
    await server?.close();
    await rm(this.folder(entry.key), { recursive: true, force: true });
  }
}

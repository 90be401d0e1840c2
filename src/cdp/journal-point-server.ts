import { createServer, type Server, type Socket } from 'node:net';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { NbdClient } from '../nbd/nbd-client.js';
import { serveNbd } from '../nbd/nbd-server.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import type { JournalIndex } from './journal-index.js';
import { PointInTimeExport, type BaseReader } from './point-in-time-export.js';

/*
 * A continuous replica's disks as they were at one instant, served over NBD on a unix socket:
 * what a VM recovered at that point in time boots from (its overlay above takes its writes), or
 * what a test recovery reads, with nothing copied first.
 *
 * Each disk is its journal up to the checkpoint (point-in-time-export.ts) over the journal's base
 * point, which a read-only storage daemon of its own serves to it (the point file opened with the
 * backing its header names, so the whole chain below it reads through). The instant is the
 * newest checkpoint at or before the time asked that every disk holds: a point in time rounds
 * down, never up.
 */

export interface JournalPointDisk {
  index: number;
  /** The base point's qcow2 file of this disk (its top layer). */
  baseFile: string;
  /** The disk's journal index (the recovery journal's, which keeps growing meanwhile: only what lies before the checkpoint is read). */
  journal: JournalIndex;
}

/** The newest checkpoint time at or before `timeUs` that every journal holds, or null. */
export function commonCheckpointAtOrBefore(journals: JournalIndex[], timeUs: number): number | null {
  const [first, ...others] = journals;
  if (first === undefined) return null;
  const held = others.map((j) => new Set(j.checkpointsBetween(-Infinity, timeUs).map((c) => c.timeUs)));
  const candidates = first.checkpointsBetween(-Infinity, timeUs);
  for (let k = candidates.length - 1; k >= 0; k--) {
    const t = candidates[k]!.timeUs;
    if (held.every((s) => s.has(t))) return t;
  }
  return null;
}

export class JournalPointServer {
  /** The instant served (µs since the epoch): the checkpoint the time asked rounded down to. */
  readonly timeUs: number;
  readonly socketPath: string;
  readonly #daemon: StorageDaemon;
  readonly #bases: NbdClient[];
  readonly #views: PointInTimeExport[];
  readonly #server: Server;
  /** The clients connected, cut at close. */
  readonly #sockets: Set<Socket>;

  private constructor(o: {
    socketPath: string;
    timeUs: number;
    daemon: StorageDaemon;
    bases: NbdClient[];
    views: PointInTimeExport[];
    server: Server;
    sockets: Set<Socket>;
  }) {
    this.timeUs = o.timeUs;
    this.#daemon = o.daemon;
    this.#bases = o.bases;
    this.#views = o.views;
    this.#server = o.server;
    this.#sockets = o.sockets;
    this.socketPath = o.socketPath;
  }

  /** The NBD export name of a disk. */
  static exportName(index: number): string {
    return `disk${index}`;
  }

  /**
   * Serves `disks` at the newest checkpoint at or before `timeUs` that every journal of
   * `instantOf` holds (default: the disks served; a reader of one disk passes all of the VM's),
   * from `dir` (a private runtime folder).
   */
  static async start(o: {
    dir: string;
    disks: JournalPointDisk[];
    timeUs: number;
    instantOf?: JournalIndex[];
  }): Promise<JournalPointServer> {
    const timeUs = commonCheckpointAtOrBefore(o.instantOf ?? o.disks.map((d) => d.journal), o.timeUs);
    if (timeUs === null)
      throw new MamoriError(
        'NOT_FOUND',
        `no point in time at or before ${new Date(o.timeUs / 1000).toISOString()}: the journal's first checkpoint is later`,
      );
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const baseSocket = join(o.dir, 'base.sock');
    const where = { qmpSocket: join(o.dir, 'qmp.sock'), pidFile: join(o.dir, 'daemon.pid') };
    // The folder of an instant is the same across restarts (point-in-time-exports.ts): a killed
    // server's daemon may still serve the base there.
    await StorageDaemon.killLeftover(where);
    const daemon = await StorageDaemon.start({
      ...where,
      chains: o.disks.map((d) => ({
        id: `base${d.index}`,
        layers: [{ file: d.baseFile, format: 'qcow2' as const }],
        readOnly: true,
      })),
      nbd: { listen: { type: 'unix', path: baseSocket } },
      exports: o.disks.map((d) => ({ id: `base${d.index}`, node: `base${d.index}` })),
    });
    const bases: NbdClient[] = [];
    const views: PointInTimeExport[] = [];
    try {
      for (const d of o.disks) {
        const client = await NbdClient.connect({ socketPath: baseSocket }, { exportName: `base${d.index}` });
        bases.push(client);
        const base: BaseReader = { size: client.size, read: (offset, length) => client.read(offset, length) };
        const seq = d.journal.checkpointsBetween(timeUs, timeUs)[0]!.seq;
        views.push(new PointInTimeExport(d.journal, seq, base));
      }
      const exports = new Map(o.disks.map((d, k) => [JournalPointServer.exportName(d.index), views[k]!]));
      const sockets = new Set<Socket>();
      const server = createServer((s) => {
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
        serveNbd(s, { exports });
      });
      const socketPath = join(o.dir, 'point.sock');
      await rm(socketPath, { force: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, resolve);
      });
      return new JournalPointServer({ socketPath, timeUs, daemon, bases, views, server, sockets });
    } catch (e) {
      for (const v of views) await v.close();
      for (const b of bases) await b.disconnect().catch(() => undefined);
      await daemon.stop();
      throw e;
    }
  }

  /** Stops serving: clients are cut, the base daemon stops, the folder's sockets go. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const s of this.#sockets) s.destroy();
    });
    for (const v of this.#views) await v.close();
    for (const b of this.#bases) await b.disconnect().catch(() => undefined);
    await this.#daemon.stop();
    await rm(this.socketPath, { force: true });
  }
}

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import type { DaemonLayer } from '../qemu/daemon-chain.js';
import { createQcow2OverQmp } from '../qemu/qmp-image-create.js';
import type { BackingRef } from '../qemu/qemu-img-write.js';
import type { Logger } from '../core/logger.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { ResidentChains } from './resident-chains.js';

/** One disk of a cycle: the newest point's layers (read-only) and the staging overlay to create on them. */
export interface StagingDisk {
  /** The replica chain's folder: its layers stay open in the daemon under this key between cycles. */
  key: string;
  lower: DaemonLayer[];
  staging: { file: string; backing: BackingRef; sizeBytes: number };
}

/** What one cycle holds open in the daemon: per disk, its export (also its top node); every node it added, in order. */
export interface StagingSet {
  exports: string[];
  /** Bottom first, as added: closed in reverse. Tracked here, not queried: see close(). */
  nodes: string[];
}

/** A chain no cycle has used for this long is closed: its replica was deleted, promoted or stopped replicating. */
const RESIDENT_IDLE_MS = 15 * 60_000;
/** A merge of a large point copies it whole: bounded as qemu-img's was. */
const MERGE_TIMEOUT_MS = 6 * 3600_000;

/**
 * The recovery site's one qemu-storage-daemon for the staging overlays of every open cycle.
 * It lives across cycles: a daemon start costs 150-600 ms here (notes/qemu-7.2.md), which
 * was most of a small cycle's cost. A cycle adds its disks over QMP (the point's layers
 * read-only, the staging overlay created by blockdev-create, so no qemu-img either) and one
 * writable NBD export each, and removes them at its end, which writes the overlay's qcow2
 * metadata (blockdev-del closes the image). The points under the overlays stay open from one
 * cycle to the next, and retention merges them here (resident-chains.ts).
 *
 * The NBD server listens on a unix socket only, with no TLS of QEMU's: the source site
 * reaches an export through the site API's own TLS (cycle-streams.ts), which terminates TLS
 * in Node (about 4x what the daemon's one main loop decrypts) and lets a connection name
 * only its own cycle's export.
 *
 * The daemon outlives a killed site server, holding cut cycles' staging open: the server
 * kills it at start (killLeftover), before the replicas' upkeep sweeps staging. A daemon that
 * dies or stops answering fails the cycles it served (their sources keep their bitmaps) and
 * the next cycle starts a new one.
 */
export class StagingDaemon {
  readonly #dir: string;
  readonly #log: Logger;
  #daemon: StorageDaemon | null = null;
  /** The replica chains open in #daemon; a new daemon starts with none. */
  #resident: ResidentChains | null = null;
  #starting: Promise<StorageDaemon> | null = null;
  #seq = 0;
  /** Whether staging overlays open with O_DIRECT: unknown until the first one (#createOverlay). */
  #directIo: boolean | null = null;

  constructor(deps: { dir: string; log: Logger }) {
    this.#dir = deps.dir;
    this.#log = deps.log;
  }

  get socketPath(): string {
    return join(this.#dir, 'nbd.sock');
  }

  /** Its pid file: tests kill the daemon by it. */
  get pidFile(): string {
    return join(this.#dir, 'sd.pid');
  }

  /** Opens the disks of one cycle and exports their staging overlays, writable. */
  async open(disks: StagingDisk[]): Promise<StagingSet> {
    const daemon = await this.#ensure();
    const resident = this.#resident!;
    const qmp = daemon.qmp();
    const set: StagingSet = { exports: [], nodes: [] };
    try {
      await this.#closeIdle(resident, new Set(disks.map((d) => d.key)));
      for (const [i, d] of disks.entries()) {
        const node = `s${++this.#seq}d${i}`;
        const lower = await resident.top(d.key, d.lower);
        await this.#createOverlay(qmp, d, node);
        set.nodes.push(`${node}-file`);
        await qmp.execute(
          'blockdev-add',
          { driver: 'qcow2', 'node-name': node, file: `${node}-file`, backing: lower },
          { timeoutMs: 10_000 },
        );
        set.nodes.push(node);
        await daemon.addExport({ id: node, node, name: node, writable: true });
        set.exports.push(node);
      }
      return set;
    } catch (e) {
      await this.close(set, 'hard').catch(() => undefined);
      throw e;
    }
  }

  /**
   * The staging overlay, written past the page cache (O_DIRECT): a replica's cycle data is
   * written once and read only when points merge or a VM recovers, and here each byte copied
   * into the page cache cost as much CPU as decrypting it (bench/replication: the daemon
   * spent 2.5 CPU-seconds per 512 MiB cycle through the page cache, 1.1 without). On a
   * filesystem without O_DIRECT (tmpfs before Linux 6.6, some FUSE) QEMU refuses it: the
   * overlay opens through the page cache instead, and this daemon stops trying.
   */
  async #createOverlay(qmp: QmpClient, d: StagingDisk, node: string): Promise<void> {
    const create = (directIo: boolean): Promise<void> =>
      createQcow2OverQmp(qmp, {
        file: d.staging.file,
        fileNode: `${node}-file`,
        sizeBytes: d.staging.sizeBytes,
        backing: d.staging.backing,
        jobId: node,
        directIo,
      });
    if (this.#directIo === false || process.env['ZZ_NODIRECT']) return create(false);
    try {
      await create(true);
      this.#directIo = true;
    } catch (e) {
      if (this.#directIo === true) throw e;
      await create(false);
      this.#directIo = false;
      this.#log.warn(
        { dir: d.staging.file, err: e },
        'the staging directory takes no O_DIRECT: staging overlays are written through the page cache',
      );
    }
  }

  /**
   * Closes a cycle's disks: exports first (`hard` drops a client still connected: a cut cycle),
   * then the overlays (their metadata written) and the lower layers. If the daemon cannot do
   * that, it is killed: an image it may still hold must never be committed or deleted under it.
   */
  async close(set: StagingSet, mode: 'safe' | 'hard'): Promise<void> {
    const daemon = this.#daemon;
    if (daemon === null) return;
    try {
      // The set holds what open() added and close() has not removed yet, as with the nodes below.
      while (set.exports.length > 0) {
        await daemon.removeExport(set.exports.at(-1)!, mode);
        set.exports.pop();
      }
      // Each overlay before its file and its backing chain. The set says what was added: asking
      // (query-named-block-nodes) returns every node's image info, hundreds of KB with many
      // cycles open, and with 16 cycles at once this daemon's QMP connection dropped mid-reply.
      // Only nodes that exist are in the set (open() records each after it was added; a failed
      // step closes its own), and each leaves the set once closed: a second close does the rest.
      while (set.nodes.length > 0) {
        const n = set.nodes.at(-1)!;
        await daemon.qmp().execute('blockdev-del', { 'node-name': n }, { timeoutMs: 10_000 });
        set.nodes.pop();
      }
    } catch (e) {
      this.#log.warn({ err: e }, 'the staging daemon could not close a cycle: killing it');
      await this.#kill();
      throw e;
    }
  }

  /**
   * Retention's merge of the point `layers.at(-2)` into the base below it, inside the daemon,
   * when `layers` (seed, base, point, the point above) are open here as chain `key`; the header
   * of the point above then names the base as `baseName`. Returns false when the chain is not
   * open here: it is then closed, so that a merge by another process may write it.
   */
  async merge(key: string, layers: DaemonLayer[], baseName: string): Promise<boolean> {
    // A daemon that died since its last cycle holds nothing (and no lock): qemu-img merges.
    if (this.#daemon?.qmp().connected !== true) {
      this.#resident = null;
      return false;
    }
    const resident = this.#resident;
    // The point above the merged one is the newest when the chain keeps few points: the cycle
    // that made it has not opened it yet.
    if (
      resident !== null &&
      resident.nodesOf(key).length === layers.length - 1 &&
      (await resident.holds(key, layers.slice(0, -1)))
    )
      await resident.top(key, layers);
    if (resident === null || !(await resident.holds(key, layers))) {
      await this.release([key]);
      return false;
    }
    try {
      await resident.merge(key, layers.length - 2, baseName, `m${++this.#seq}`, MERGE_TIMEOUT_MS);
    } catch (e) {
      // The chain is closed after a failed merge; a daemon that could not close it must go.
      if (resident.keys().includes(key)) await this.#kill();
      throw e;
    }
    return true;
  }

  /**
   * Closes the chains under these keys (a replica deleted, promoted, or about to be written by
   * another process). A daemon that cannot close them is killed: its locks must go.
   */
  async release(keys: string[]): Promise<void> {
    const resident = this.#resident;
    if (resident === null) return;
    try {
      for (const k of keys) await resident.release(k);
    } catch (e) {
      this.#log.warn({ err: e }, 'the staging daemon could not close a replica chain: killing it');
      await this.#kill();
    }
  }

  /** Keys of the chains open now (startsWith `prefix`). */
  residentKeys(prefix = ''): string[] {
    return (this.#resident?.keys() ?? []).filter((k) => k.startsWith(prefix));
  }

  async #closeIdle(resident: ResidentChains, using: Set<string>): Promise<void> {
    const idle = resident.idleSince(Date.now() - RESIDENT_IDLE_MS).filter((k) => !using.has(k));
    for (const k of idle) await resident.release(k);
  }

  /** At server start: a daemon a killed server left holds cut cycles' staging open. */
  async killLeftover(): Promise<boolean> {
    return StorageDaemon.killLeftover(this.#files());
  }

  async stop(): Promise<void> {
    const d = this.#daemon;
    this.#daemon = null;
    this.#resident = null;
    if (d) await d.stop().catch(() => d.kill());
  }

  async #kill(): Promise<void> {
    const d = this.#daemon;
    this.#daemon = null;
    this.#resident = null;
    if (d) await d.kill().catch(() => undefined);
  }

  async #ensure(): Promise<StorageDaemon> {
    const d = this.#daemon;
    if (d !== null && d.qmp().connected && (await d.isAlive())) return d;
    this.#daemon = null;
    this.#resident = null;
    this.#starting ??= this.#start().finally(() => (this.#starting = null));
    return this.#starting;
  }

  async #start(): Promise<StorageDaemon> {
    await mkdir(this.#dir, { recursive: true });
    if (await StorageDaemon.killLeftover(this.#files()))
      this.#log.warn({ dir: this.#dir }, 'killed a staging daemon that stopped answering');
    const daemon = await StorageDaemon.start({
      ...this.#files(),
      chains: [],
      nbd: { listen: { type: 'unix', path: this.socketPath } },
    });
    this.#daemon = daemon;
    this.#resident = new ResidentChains(daemon.qmp());
    this.#log.info({ pid: daemon.pid }, 'staging daemon started');
    return daemon;
  }

  #files(): { qmpSocket: string; pidFile: string } {
    return { qmpSocket: join(this.#dir, 'qmp.sock'), pidFile: this.pidFile };
  }
}

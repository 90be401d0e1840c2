import { open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { parseWriteLogSuperblock } from './write-log-format.js';
import { cancelMirror, mirrorOnto } from './write-blocking-mirror.js';

/*
 * Continuous replication's tap, written by QEMU itself: a write-blocking mirror of the guest's
 * disk onto a blklogwrites node over null-co, whose log is a file of the VM's runtime folder.
 * Each guest write goes into the log, in order, before the guest sees it complete, and no
 * process of ours is in its path (bench/cdp: 0.80 of the guest's IOPS, where a round trip
 * through a receiver of ours cost 0.62 at best).
 *
 * The log has no checksums, and QEMU counts an entry when it begins it: a reader cannot tell a
 * whole entry from one still being written. A checkpoint makes a prefix known whole:
 *   1. a flush of the log node (HMP qemu-io on the node name: no QMP command flushes one node
 *      in 7.2) appends a flush entry and rewrites the superblock with the count of entries
 *      begun; qemu-io's temporary BlockBackend drains the node as it goes;
 *   2. that count is read back;
 *   3. an empty QMP transaction drains all I/O, which 7.2's qmp_transaction does before any
 *      action (later QEMUs dropped it: this must change with the QEMU we ship).
 * Every entry counted in step 2 began before step 3, so it is whole once step 3 returns. 7.2
 * does not order superblock writes (one every 4096 entries and one per flush may cross), so
 * the count read can be an older one: a shorter prefix, still whole, whose instant is a little
 * earlier than `at` (the race needs the periodic write in flight with the flush's: at most once
 * in 4096 entries; the next checkpoint's count covers it). A flush with no write since the last one writes nothing; the old count then covers
 * every entry. The prefix is the disk at `at`, when the flush was asked: writes completed before
 * it are in; writes in flight at it, and some completed in the moment the checkpoint takes, may
 * be either way (crash-consistent).
 *
 * Guest flushes never reach the log (the mirror's filter flushes its source only); its flush
 * entries are our checkpoints', and the mirror job's once before it is ready and at its end.
 */

export interface QemuWriteLogOptions {
  qmp: QmpClient;
  /** The guest's disk node, e.g. `disk0`. */
  device: string;
  sizeBytes: number;
  /** The log file (created empty; QEMU appends). */
  logPath: string;
  readyTimeoutMs?: number;
}

export interface WriteLogCheckpoint {
  /** Entries [0, entries) of the log are whole and hold the disk's writes up to `at`. */
  entries: number;
  /** The prefix's instant: when the flush was asked. Every write completed before it is in the prefix. */
  at: Date;
}

export class QemuWriteLog {
  readonly #o: QemuWriteLogOptions;
  readonly #node: string;
  readonly #jobId: string;
  #attached = false;
  /** The log, open for the superblock each checkpoint reads (once, not per checkpoint). */
  #fh: FileHandle | null = null;
  /** The longest whole prefix seen: a checkpoint never goes back behind the one before. */
  #whole = 0;

  private constructor(o: QemuWriteLogOptions) {
    this.#o = o;
    this.#node = `cdp-log-${o.device}`;
    this.#jobId = `cdp-${o.device}`;
  }

  /** Starts logging: the log node, then the mirror onto it, ready (from then on every write is logged). */
  static async attach(o: QemuWriteLogOptions): Promise<QemuWriteLog> {
    const log = new QemuWriteLog(o);
    await QemuWriteLog.clearLeftovers(o.qmp, o.device);
    await rm(o.logPath, { force: true });
    await writeFile(o.logPath, Buffer.alloc(0), { flag: 'wx' });
    try {
      await o.qmp.execute('blockdev-add', {
        driver: 'blklogwrites',
        'node-name': log.#node,
        file: { driver: 'null-co', size: o.sizeBytes },
        // The log is read behind the guest while this server runs and never after a crash (a new
        // tap starts a new journal), so its flushes need not reach the disk: blklogwrites still
        // writes its flush entry and superblock (the checkpoint's marks), without an fdatasync
        // of everything the guest wrote since.
        log: { driver: 'file', filename: o.logPath, cache: { 'no-flush': true } },
      });
      log.#attached = true;
      await mirrorOnto(o.qmp, {
        device: o.device,
        jobId: log.#jobId,
        target: log.#node,
        readyTimeoutMs: o.readyTimeoutMs,
      });
      return log;
    } catch (e) {
      await log.detach().catch(() => undefined);
      throw e;
    }
  }

  /**
   * A server killed while its tap ran leaves the mirror and the log node in the VM's QEMU (the
   * VM runs on): they go before anything else uses the disk (a cycle's fleecing is refused
   * beside the mirror) and before a new tap, whose names they hold. Their log is not read again:
   * the new tap starts a new journal over a new base.
   */
  static async clearLeftovers(qmp: QmpClient, device: string): Promise<boolean> {
    const jobId = `cdp-${device}`;
    const node = `cdp-log-${device}`;
    const jobs = (await qmp.execute('query-block-jobs')) as { device: string }[];
    const nodes = (await qmp.execute('query-named-block-nodes', { flat: true })) as { 'node-name': string }[];
    const found = jobs.some((j) => j.device === jobId) || nodes.some((n) => n['node-name'] === node);
    await cancelMirror(qmp, jobId);
    if (nodes.some((n) => n['node-name'] === node)) await qmp.execute('blockdev-del', { 'node-name': node });
    return found;
  }

  get logPath(): string {
    return this.#o.logPath;
  }

  /** A checkpoint: a prefix of the log known whole, and its instant (see the comment above). */
  async checkpoint(): Promise<WriteLogCheckpoint> {
    // Taken before the flush is asked: every write the guest saw complete before this began its
    // log entry before the flush, so the count read after it covers the write.
    const at = new Date();
    const out = await this.#o.qmp.execute('human-monitor-command', {
      'command-line': `qemu-io ${this.#node} "flush"`,
    });
    if (typeof out === 'string' && out.trim() !== '')
      throw new MamoriError('QMP_ERROR', `the write log of ${this.#o.device} could not be flushed: ${out.trim()}`);
    const head = Buffer.alloc(512);
    this.#fh ??= await open(this.#o.logPath, 'r');
    await this.#fh.read(head, 0, head.length, 0);
    // No superblock after a flush: QEMU skipped the flush as nothing was written since the
    // node was opened (block/io.c compares write generations), so the log holds no entry.
    const sb = parseWriteLogSuperblock(head, this.#o.logPath);
    await this.#o.qmp.execute('transaction', { actions: [] });
    this.#whole = Math.max(this.#whole, sb?.entries ?? 0);
    return { entries: this.#whole, at };
  }

  /** The log file's length: QEMU appends, so it grows by every entry begun (holes punched behind the reader keep it). */
  async size(): Promise<number> {
    if (!this.#attached) throw new MamoriError('QMP_ERROR', `the write log of ${this.#o.device} is detached`);
    this.#fh ??= await open(this.#o.logPath, 'r');
    return (await this.#fh.stat()).size;
  }

  /** Stops logging: the mirror goes (the guest writes to its disk alone), then the log node. The file stays. */
  async detach(): Promise<void> {
    try {
      await cancelMirror(this.#o.qmp, this.#jobId);
      if (this.#attached) await this.#o.qmp.execute('blockdev-del', { 'node-name': this.#node });
      this.#attached = false;
    } finally {
      await this.#fh?.close();
      this.#fh = null;
    }
  }

  /** Removes the log file (after detach, once what it holds has been shipped). */
  async remove(): Promise<void> {
    await rm(this.#o.logPath, { force: true });
  }
}

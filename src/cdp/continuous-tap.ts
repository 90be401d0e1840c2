import { rm } from 'node:fs/promises';
import { runProcess } from '../core/run-process.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { QemuWriteLog } from './qemu-write-log.js';
import { WriteLogReader } from './write-log-format.js';
import { pumpWriteLog, pumpWriteLogAhead } from './write-log-pump.js';
import type { WriteJournal } from './write-journal.js';

/*
 * The protected side of continuous replication for one disk of a running VM: QEMU logs each
 * guest write in order (cdp/qemu-write-log.ts), and every interval a checkpoint makes a prefix
 * of that log whole and pumps it into the journal (cdp/write-log-pump.ts), behind the guest.
 * No process of ours is in a guest write's path (bench/cdp).
 *
 * Between checkpoints, once the log holds 16 MiB not yet pumped, the tap makes its prefix whole
 * the same way and pumps it ahead of the checkpoint, without one: a checkpoint never finds more
 * than that left to pump, ship and sync before the recovery site has it, however long the
 * interval and fast the writes. It is a bound, not a habit: each pump ahead is a drain of the
 * guest's disk and a burst of work beside the guest, and pumped every 250 ms once 1 MiB had
 * grown, it cost the guest's queue-depth-1 writes 5 to 9 % of their rate while it took only
 * 0.07 s off the RPO at 20 MiB/s and 500 ms checkpoints (0.725 s against 0.798 s; bench/cdp).
 *
 * When the log or the journal fails, the guest is not hurt: a failed write to the log fails the
 * mirror's copy, not the guest's write (QEMU reports BLOCK_JOB_ERROR), and a failed append only
 * stops the pump. But from then on the journal is no longer the guest's writes in order. So the
 * first error ends the tap: the mirror is cancelled, no more checkpoints are taken, and
 * `onBroken` tells the owner, which falls back to the replication bitmap (it recorded every
 * write all along) and resyncs. The journal's last checkpoint before the break stays a true
 * point in time.
 */

export interface ContinuousTapOptions {
  qmp: QmpClient;
  /** The guest's node, e.g. `disk0`. */
  device: string;
  sizeBytes: number;
  journal: WriteJournal;
  /** QEMU's log of the disk's writes (in the VM's runtime folder: its mode keeps others out). */
  logPath: string;
  /**
   * Milliseconds between crash-consistent checkpoints; 0: none on the tap's own clock (its owner
   * calls checkpoint(), as a VM's session does for all its disks at one instant).
   */
  checkpointMs: number;
  /** The tap broke (log, journal or mirror failed); called once. */
  onBroken?: (reason: string) => void;
  /** Milliseconds between looks at the log for writes to pump ahead of the next checkpoint; 0: none (250). */
  pumpAheadMs?: number;
  /** Bytes of the log not yet pumped that call for a pump ahead of the checkpoint (16 MiB). */
  pumpAheadBytes?: number;
  /** Bytes of the log read into the journal before their disk space is given back (64 MiB). */
  releaseEveryBytes?: number;
  /**
   * The log's space could not be given back (a file system without hole punching, say): the
   * tap runs on, and the log grows with every write until the owner acts. Called once.
   */
  onLogGrows?: (reason: string) => void;
}

/** Log bytes are freed in whole 4 KiB blocks, never the superblock's. */
const BLOCK = 4096;
const PUMP_AHEAD_MS = 250;
const PUMP_AHEAD_BYTES = 16 * 1024 * 1024;

export class ContinuousTap {
  readonly #o: ContinuousTapOptions;
  #log: QemuWriteLog | null = null;
  #reader: WriteLogReader | null = null;
  #timer: NodeJS.Timeout | null = null;
  #aheadTimer: NodeJS.Timeout | null = null;
  /** The checkpoint being taken: one at a time, in order. */
  #taking: Promise<number> | null = null;
  /** The pump ahead running: a checkpoint's flush goes on beside it, its pump after it. */
  #pumpingAhead: Promise<void> | null = null;
  /** Checkpoints asked for and not yet begun: a pump ahead never starts before them. */
  #wanted = 0;
  /** No pump ahead before the first checkpoint: its owner puts the gap's writes first (ContinuousSession). */
  #checkpointed = false;
  #unsubscribe: (() => void)[] = [];
  #broken: string | null = null;
  #stopped = false;
  /** The log's bytes before this were read and their space given back. */
  #released = BLOCK;
  /** Why the log's space is not given back (null while it is). */
  #releaseFailed: string | null = null;

  private constructor(o: ContinuousTapOptions) {
    this.#o = o;
  }

  static async start(o: ContinuousTapOptions): Promise<ContinuousTap> {
    const tap = new ContinuousTap(o);
    try {
      await rm(o.logPath, { force: true });
      const jobId = `cdp-${o.device}`;
      for (const ev of ['BLOCK_JOB_ERROR', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_COMPLETED'])
        tap.#unsubscribe.push(
          o.qmp.on(ev, (e) => {
            if ((e.data as { device?: string } | undefined)?.device === jobId && !tap.#stopped)
              tap.#break(`the mirror reported ${ev}${ev === 'BLOCK_JOB_ERROR' ? ' (the write log failed)' : ''}`);
          }),
        );
      tap.#log = await QemuWriteLog.attach({
        qmp: o.qmp,
        device: o.device,
        sizeBytes: o.sizeBytes,
        logPath: o.logPath,
      });
      tap.#reader = await WriteLogReader.open(o.logPath);
      if (o.checkpointMs > 0)
        tap.#timer = setInterval(() => {
          if (tap.#taking === null) tap.checkpoint().catch(() => undefined); // a failure breaks the tap
        }, o.checkpointMs);
      const aheadMs = o.pumpAheadMs ?? PUMP_AHEAD_MS;
      if (aheadMs > 0) tap.#aheadTimer = setInterval(() => void tap.#pumpAhead(), aheadMs);
      return tap;
    } catch (e) {
      await tap.stop();
      throw e;
    }
  }

  /** Why the tap broke, or null while it runs. */
  get broken(): string | null {
    return this.#broken;
  }

  /**
   * A checkpoint now, once the one being taken is done: its sequence number in the journal
   * (application-consistent ones are taken with the guest frozen around this, `flags` saying so).
   * With `instant`, the checkpoint is one of a consistency group's (checkpointTogether).
   */
  async checkpoint(flags = 0, instant?: SharedInstant): Promise<number> {
    this.#wanted += 1;
    while (this.#taking !== null) await this.#taking.catch(() => undefined);
    this.#wanted -= 1;
    const taking = this.#take(flags, instant);
    this.#taking = taking;
    try {
      return await taking;
    } finally {
      this.#taking = null;
    }
  }

  /**
   * Pumps the log's whole prefix into the journal ahead of the next checkpoint, when it has
   * grown enough, and nothing else is being taken or waits: a checkpoint asked for goes first,
   * so a consistency group's instant is never behind an ahead batch's flush.
   */
  async #pumpAhead(): Promise<void> {
    if (!this.#idle()) return;
    let grown: number;
    try {
      grown = (await this.#log!.size()) - this.#reader!.offset;
    } catch {
      return; // detached meanwhile: the tap is ending
    }
    if (grown < (this.#o.pumpAheadBytes ?? PUMP_AHEAD_BYTES) || !this.#idle()) return;
    const pumping = this.#ahead();
    this.#pumpingAhead = pumping;
    try {
      await pumping;
    } catch {
      // broken, and reported, by #ahead
    } finally {
      this.#pumpingAhead = null;
    }
  }

  #idle(): boolean {
    return (
      this.#checkpointed &&
      this.#taking === null &&
      this.#pumpingAhead === null &&
      this.#wanted === 0 &&
      this.#broken === null &&
      !this.#stopped
    );
  }

  async #ahead(): Promise<void> {
    try {
      const prefix = await this.#log!.checkpoint();
      await pumpWriteLogAhead(this.#reader!, this.#o.journal, prefix.entries);
      await this.#release();
    } catch (e) {
      this.#break(`pumping the write log failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /** Ends the tap: the mirror goes, then QEMU's log; the journal stays open (its owner's). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopTimers();
    await this.#taking?.catch(() => undefined);
    await this.#pumpingAhead?.catch(() => undefined);
    for (const u of this.#unsubscribe.splice(0)) u();
    await this.#end();
  }

  async #take(flags: number, instant?: SharedInstant): Promise<number> {
    if (this.#broken !== null) {
      const e = new Error(`the tap of ${this.#o.device} broke: ${this.#broken}`);
      instant?.fail(e);
      throw e;
    }
    let cp;
    try {
      cp = await this.#log!.checkpoint();
    } catch (e) {
      instant?.fail(e as Error);
      this.#break(`a checkpoint failed: ${(e as Error).message}`);
      throw e;
    }
    // In a group, every journal's checkpoint is stamped with the group's earliest instant: the
    // drained prefixes were taken at once, so they lie within the time the slowest one took.
    const at = instant === undefined ? cp.at : await instant.arrive(cp.at);
    // The flush was not held back by a pump ahead; the reading of the log waits for it.
    await this.#pumpingAhead?.catch(() => undefined);
    if (this.#broken !== null) throw new Error(`the tap of ${this.#o.device} broke: ${this.#broken}`);
    try {
      const { checkpointSeq } = await pumpWriteLog(this.#reader!, this.#o.journal, { entries: cp.entries, at }, flags);
      await this.#release();
      this.#checkpointed = true;
      return checkpointSeq;
    } catch (e) {
      this.#break(`a checkpoint failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /**
   * QEMU only appends to its log, so what is read is freed by punching it out (the file keeps
   * its length; its blocks go): the log holds on disk what is not yet in the journal, and a
   * little more. Node has no fallocate; util-linux's is a process every releaseEveryBytes.
   */
  async #release(): Promise<void> {
    if (this.#releaseFailed !== null) return;
    const upTo = Math.floor(this.#reader!.offset / BLOCK) * BLOCK;
    if (upTo - this.#released < (this.#o.releaseEveryBytes ?? 64 * 1024 * 1024)) return;
    try {
      await runProcess('fallocate', [
        '--punch-hole',
        '--offset',
        String(this.#released),
        '--length',
        String(upTo - this.#released),
        this.#o.logPath,
      ]);
      this.#released = upTo;
    } catch (e) {
      // Not a reason to stop protecting the VM: the journal is whole, only the log grows.
      this.#releaseFailed = (e as Error).message;
      this.#o.onLogGrows?.(this.#releaseFailed);
    }
  }

  #stopTimers(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    if (this.#aheadTimer !== null) clearInterval(this.#aheadTimer);
    this.#timer = null;
    this.#aheadTimer = null;
  }

  async #end(): Promise<void> {
    const log = this.#log;
    this.#log = null;
    if (log !== null) await log.detach().catch(() => undefined);
    const reader = this.#reader;
    this.#reader = null;
    await reader?.close().catch(() => undefined);
    await rm(this.#o.logPath, { force: true });
  }

  #break(reason: string): void {
    if (this.#broken !== null || this.#stopped) return;
    this.#broken = reason;
    this.#stopTimers();
    // The mirror goes at once: a job that stays would copy what it missed later, out of order.
    void this.#end();
    this.#o.onBroken?.(reason);
  }
}

/**
 * The one instant a consistency group's checkpoint is stamped with: each tap arrives with its
 * own, and all go on with the earliest once every tap has arrived (every write any of them
 * completed before it is in its tap's prefix, as each tap's instant is when its flush began). One tap failing fails the
 * group's checkpoint for all (the others' taps go on: their next checkpoint holds it all).
 */
export class SharedInstant {
  readonly #expected: number;
  #arrived = 0;
  #earliest = Infinity;
  #failure: Error | null = null;
  readonly #waiters: { resolve: (at: Date) => void; reject: (e: Error) => void }[] = [];

  constructor(taps: number) {
    this.#expected = taps;
  }

  /** Some tap failed: the instant is abandoned for all (each tap's next checkpoint holds its writes). */
  get abandoned(): boolean {
    return this.#failure !== null;
  }

  arrive(at: Date): Promise<Date> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    this.#earliest = Math.min(this.#earliest, at.getTime());
    this.#arrived += 1;
    const p = new Promise<Date>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.#arrived === this.#expected) for (const w of this.#waiters.splice(0)) w.resolve(new Date(this.#earliest));
    return p;
  }

  fail(e: Error): void {
    this.#failure ??= new Error(`the group's checkpoint was abandoned: ${e.message}`);
    for (const w of this.#waiters.splice(0)) w.reject(this.#failure);
  }
}

/**
 * A crash-consistent checkpoint of several disks (a VM's, or with a larger `instant` shared by
 * other calls, a consistency group's VMs') at one instant: their drained checkpoints are taken
 * at once, and every journal gets the same time.
 */
export async function checkpointTogether(
  taps: readonly ContinuousTap[],
  flags = 0,
  instant: SharedInstant = new SharedInstant(taps.length),
): Promise<number[]> {
  const taken = taps.map((t) => t.checkpoint(flags, instant));
  const settled = await Promise.allSettled(taken);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  return settled.map((r) => (r as PromiseFulfilledResult<number>).value);
}

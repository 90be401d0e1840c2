import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/logger.js';
import { isMamoriError } from '../core/mamori-error.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { ContinuousTap, SharedInstant, checkpointTogether } from './continuous-tap.js';
import { recordBytes } from './journal-format.js';
import { shipJournal } from './journal-shipping.js';
import { WriteJournal } from './write-journal.js';

/*
 * One running VM under continuous replication, on the protected site: a tap per disk
 * (continuous-tap.ts) journalling its writes into a local journal, a checkpoint of all disks at
 * one instant every interval, and a shipper per disk sending the journal to the recovery site
 * over the site link, behind the guest. The session knows nothing of the database or the peer:
 * its owner (replication/continuous-replication.ts) gives it the wires and the gap's writes.
 *
 * The base: the recovery site replays the journal over the replica's newest point. The taps
 * begin after that point's instant, so the writes between the two are not in QEMU's log; they
 * are what the replication bitmap marked since the point. `fillGap` reads those blocks from the
 * running disk into each journal before its first checkpoint. A block read there may be newer
 * than the tap's start (the guest writes on); the log's writes after it repeat whatever the
 * read saw, in order, so the first checkpoint, and every one after, is the disk at its instant.
 *
 * Anything that fails ends the session through `onBroken` (the owner falls back to the bitmap
 * and resyncs): a tap, a checkpoint, a journal, a recovery site whose journal does not match,
 * or a backlog past its bound while the link is down. The guest never waits for any of it.
 */

export interface SessionDisk {
  /** The guest's node, e.g. `disk0`. */
  node: string;
  sizeBytes: number;
}

export interface ContinuousSessionOptions {
  qmp: QmpClient;
  disks: readonly SessionDisk[];
  /** The session's folder (journals and QEMU's logs): emptied at start. */
  dir: string;
  checkpointMs: number;
  /**
   * The session's checkpoints after its first are taken by its owner with other sessions'
   * (checkpointShared: a consistency group's VMs at one instant), not on its own clock.
   */
  sharedClock?: boolean;
  /** Puts the writes the base lacks from before the tap into disk `disk`'s journal. */
  fillGap: (disk: number, journal: WriteJournal) => Promise<void>;
  /** Bytes of journal not yet on the recovery site before the session gives up (the link is down too long). */
  maxBacklogBytes: number;
  /** No acknowledgment for this long while records wait: the connection is dropped and dialled again. */
  ackTimeoutMs?: number;
  /** The session broke (called once); it has stopped its taps by then. */
  onBroken: (reason: string) => void;
  log: Logger;
}

export interface SessionStatus {
  /** The newest checkpoint taken here. */
  checkpointAt: string | null;
  /** The newest checkpoint every disk's journal holds at the recovery site: the recovery point. */
  shippedAt: string | null;
  /** Journal bytes taken here and not yet acknowledged by the recovery site. */
  backlogBytes: number;
  broken: string | null;
}

interface DiskState {
  journal: WriteJournal;
  tap: ContinuousTap | null;
  wire: Duplex | null;
  /** The last record the recovery site has on stable storage. */
  acked: number;
  ackedAt: number;
  /** Record bytes appended here, and acknowledged there (each summed once, as records come). */
  counted: number;
  appendedBytes: number;
  ackedBytes: number;
}

const DEFAULT_ACK_TIMEOUT_MS = 15_000;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10_000;
/** How long a flagged checkpoint waits for the one being taken (a checkpoint takes milliseconds). */
const FLAGGED_WAIT_MS = 5_000;

export class ContinuousSession {
  readonly #o: ContinuousSessionOptions;
  readonly #disks: DiskState[] = [];
  /** Checkpoints taken, oldest first, until the recovery site holds them: time and each disk's record. */
  readonly #pending: { timeUs: number; seqs: number[] }[] = [];
  #checkpointUs: number | null = null;
  #shippedUs: number | null = null;
  #timer: NodeJS.Timeout | null = null;
  #taking = false;
  #shipping: Promise<void>[] = [];
  #broken: string | null = null;
  #stopped = false;

  private constructor(o: ContinuousSessionOptions) {
    this.#o = o;
  }

  /**
   * Starts the taps, puts the gap into each journal and takes the first checkpoint: from then
   * on the journals are the disks' writes over the base. Shipping starts with ship().
   */
  static async start(o: ContinuousSessionOptions): Promise<ContinuousSession> {
    const s = new ContinuousSession(o);
    try {
      await rm(o.dir, { recursive: true, force: true });
      await mkdir(o.dir, { recursive: true, mode: 0o700 });
      for (const [i, d] of o.disks.entries()) {
        // Not synced: this journal is a buffer for the link, deleted at the next session's start;
        // an acknowledgment is the recovery site's durable copy (WriteJournalOptions.sync).
        const journal = await WriteJournal.open(join(o.dir, `disk${i}`), { sync: false });
        const state: DiskState = {
          journal,
          tap: null,
          wire: null,
          acked: 0,
          ackedAt: Date.now(),
          counted: 0,
          appendedBytes: 0,
          ackedBytes: 0,
        };
        s.#disks.push(state);
        state.tap = await ContinuousTap.start({
          qmp: o.qmp,
          device: d.node,
          sizeBytes: d.sizeBytes,
          journal,
          logPath: join(o.dir, `disk${i}.log`),
          checkpointMs: 0,
          onBroken: (reason) => s.#break(`the tap of ${d.node} broke: ${reason}`),
          onLogGrows: (reason) =>
            o.log.warn({ node: d.node, err: reason }, "the write log's space is not given back; it grows"),
        });
      }
      for (const [i, d] of s.#disks.entries()) await o.fillGap(i, d.journal);
      await s.#checkpoint();
      if (o.sharedClock !== true) s.#timer = setInterval(() => void s.#tick(), o.checkpointMs);
      return s;
    } catch (e) {
      await s.stop();
      throw e;
    }
  }

  /** Ships every disk's journal over wires `openWire` dials, again after each cut, until stop(). */
  ship(openWire: (disk: number) => Promise<Duplex>): void {
    this.#shipping = this.#disks.map((_, i) => this.#shipLoop(i, openWire));
  }

  get status(): SessionStatus {
    const iso = (us: number | null): string | null => (us === null ? null : new Date(us / 1000).toISOString());
    return {
      checkpointAt: iso(this.#checkpointUs),
      shippedAt: iso(this.#shippedUs),
      backlogBytes: this.#backlog(),
      broken: this.#broken,
    };
  }

  /** When the newest checkpoint the recovery site holds was taken (ms since the epoch), or null. */
  get shippedAtMs(): number | null {
    return this.#shippedUs === null ? null : Math.floor(this.#shippedUs / 1000);
  }

  /** Ends the session: taps, checkpoints and shipping stop; the local journals go. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#end();
    await Promise.allSettled(this.#shipping);
    for (const d of this.#disks) await d.journal.close().catch(() => undefined);
    await rm(this.#o.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  async #end(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    for (const d of this.#disks) {
      d.wire?.destroy();
      const tap = d.tap;
      d.tap = null;
      await tap?.stop().catch(() => undefined);
    }
  }

  /** Disks whose checkpoint a shared instant waits for; 0 while the session cannot take one now. */
  get disksReady(): number {
    return this.#taking || this.#stopped || this.#broken !== null ? 0 : this.#disks.length;
  }

  /**
   * One checkpoint at the instant shared with other sessions (whose disks `instant` counts too):
   * call only when disksReady counted this session. A failure fails the instant for all, and
   * breaks only this session.
   */
  async checkpointShared(instant: SharedInstant): Promise<void> {
    await this.#tick(instant);
  }

  /** The session's disks (what a shared instant counts for it). */
  get diskCount(): number {
    return this.#disks.length;
  }

  /**
   * One checkpoint labelled `flags` (an application-consistent one, taken while the caller holds
   * the guest frozen), once the one being taken, if any, is done; at `instant` when shared with
   * other sessions. True when it was taken.
   */
  async checkpointFlagged(flags: number, instant?: SharedInstant): Promise<boolean> {
    for (let waited = 0; this.#taking && waited < FLAGGED_WAIT_MS; waited += 20)
      await new Promise((r) => setTimeout(r, 20));
    const before = this.#checkpointUs;
    await this.#tick(instant, flags);
    return this.#broken === null && this.#checkpointUs !== before;
  }

  async #tick(instant?: SharedInstant, flags = 0): Promise<void> {
    if (this.#taking || this.#stopped || this.#broken !== null) {
      instant?.fail(new Error('a session of the group could not take the checkpoint'));
      return;
    }
    this.#taking = true;
    try {
      await this.#checkpoint(instant, flags);
      this.#watchLink();
    } catch (e) {
      // Another session's failure abandoned the group's instant: this one's taps are whole,
      // and its next checkpoint holds what this one would have.
      const mine = this.#disks.some((d) => d.tap?.broken !== null);
      if (instant?.abandoned !== true || mine) this.#break(`a checkpoint failed: ${(e as Error).message}`);
    } finally {
      this.#taking = false;
    }
  }

  async #checkpoint(instant?: SharedInstant, flags = 0): Promise<void> {
    const taps = this.#disks.map((d) => d.tap!);
    const seqs = await checkpointTogether(taps, flags, instant);
    const timeUs = this.#disks[0]!.journal.index.get(seqs[0]!).timeUs;
    this.#checkpointUs = timeUs;
    this.#pending.push({ timeUs, seqs });
    for (const d of this.#disks) this.#countAppended(d);
    this.#advanceShipped();
  }

  /** A connection that takes records and acknowledges none for too long is dropped (a cut link rarely closes). */
  #watchLink(): void {
    const now = Date.now();
    for (const d of this.#disks) {
      if (d.acked >= d.journal.durableSeq) d.ackedAt = now;
      else if (now - d.ackedAt > (this.#o.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS) && d.wire !== null) {
        this.#o.log.warn({ disk: d.journal.dir }, 'the journal stream acknowledges nothing; dialling again');
        d.wire.destroy();
        d.ackedAt = now;
      }
    }
    const backlog = this.#backlog();
    if (backlog > this.#o.maxBacklogBytes)
      this.#break(
        `${backlog} bytes of journal wait for the recovery site, more than the ${this.#o.maxBacklogBytes} held here`,
      );
  }

  async #shipLoop(disk: number, openWire: (disk: number) => Promise<Duplex>): Promise<void> {
    const d = this.#disks[disk]!;
    let wait = RECONNECT_MIN_MS;
    while (!this.#stopped && this.#broken === null) {
      try {
        const wire = await openWire(disk);
        if (this.#stopped || this.#broken !== null) {
          wire.destroy();
          return;
        }
        d.wire = wire;
        d.ackedAt = Date.now();
        await shipJournal(d.journal, wire, { onAck: (seq) => this.#ack(disk, seq) });
        wait = RECONNECT_MIN_MS;
      } catch (e) {
        // The recovery site's journal is not this one's (or lost what it acknowledged): no resume can mend that.
        if (isMamoriError(e, 'JOURNAL_CORRUPT')) return this.#break((e as Error).message);
        if (!this.#stopped) this.#o.log.info({ disk, err: (e as Error).message }, 'journal stream cut; dialling again');
      } finally {
        d.wire?.destroy();
        d.wire = null;
      }
      if (this.#stopped || this.#broken !== null) return;
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, RECONNECT_MAX_MS);
    }
  }

  #ack(disk: number, seq: number): void {
    const d = this.#disks[disk]!;
    if (seq <= d.acked) return;
    for (let s = Math.max(d.acked + 1, d.journal.index.firstSeq); s <= seq && s < d.journal.index.nextSeq; s++)
      d.ackedBytes += recordBytes(d.journal.index.get(s));
    d.acked = seq;
    d.ackedAt = Date.now();
    this.#advanceShipped();
  }

  #countAppended(d: DiskState): void {
    const next = d.journal.index.nextSeq;
    for (let s = Math.max(d.counted + 1, d.journal.index.firstSeq); s < next; s++)
      d.appendedBytes += recordBytes(d.journal.index.get(s));
    d.counted = next - 1;
  }

  #advanceShipped(): void {
    while (this.#pending.length > 0 && this.#pending[0]!.seqs.every((seq, i) => seq <= this.#disks[i]!.acked))
      this.#shippedUs = this.#pending.shift()!.timeUs;
  }

  #backlog(): number {
    return this.#disks.reduce((sum, d) => sum + Math.max(0, d.appendedBytes - d.ackedBytes), 0);
  }

  #break(reason: string): void {
    if (this.#broken !== null || this.#stopped) return;
    this.#broken = reason;
    void this.#end();
    this.#o.onBroken(reason);
  }
}

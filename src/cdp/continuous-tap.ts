import { createServer, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import type { QmpClient } from '../qemu/qmp-client.js';
import { serveNbd } from '../nbd/nbd-server.js';
import { JournalReceiver } from './journal-receiver.js';
import {
  startWriteBlockingMirror,
  stopWriteBlockingMirror,
  type WriteBlockingMirror,
} from './write-blocking-mirror.js';
import type { WriteJournal } from './write-journal.js';

/*
 * The protected side of continuous replication for one disk of a running VM: the journal
 * receiver on a unix socket of the VM's runtime folder, the write-blocking mirror onto it,
 * and a crash-consistent checkpoint every interval (every write acknowledged to the guest
 * before a checkpoint record is in the journal before it).
 *
 * When the receiver or the mirror fails, the guest is not hurt: QEMU reports BLOCK_JOB_ERROR
 * and completes the guest's write on its disk alone (measured on 7.2, a closed connection
 * and a receiver answering EIO alike). But the job stays "ready" and only marks what it could
 * not send, to copy it later in the background: from then on the journal is no longer the
 * guest's writes in order. So the first error ends the tap: the mirror is cancelled, no more
 * checkpoints are taken, and `onBroken` tells the owner, which falls back to the replication
 * bitmap (it recorded every write all along) and resyncs. The journal's last checkpoint
 * before the break stays a true point in time.
 */

export interface ContinuousTapOptions {
  qmp: QmpClient;
  /** The guest's node, e.g. `disk0`. */
  device: string;
  sizeBytes: number;
  journal: WriteJournal;
  /** The receiver's socket (in the VM's runtime folder: its mode keeps others out). */
  socketPath: string;
  /** Milliseconds between crash-consistent checkpoints. */
  checkpointMs: number;
  /** The tap broke (receiver, journal or mirror failed); called once. */
  onBroken?: (reason: string) => void;
}

export class ContinuousTap {
  readonly #o: ContinuousTapOptions;
  readonly #jobId: string;
  #server: Server | null = null;
  readonly #sockets = new Set<Socket>();
  #mirror: WriteBlockingMirror | null = null;
  #timer: NodeJS.Timeout | null = null;
  #unsubscribe: (() => void)[] = [];
  #broken: string | null = null;
  #stopped = false;

  private constructor(o: ContinuousTapOptions) {
    this.#o = o;
    this.#jobId = `cdp-${o.device}`;
  }

  /** Starts receiving before the mirror starts: the first write forwarded finds the receiver up. */
  static async start(o: ContinuousTapOptions): Promise<ContinuousTap> {
    const tap = new ContinuousTap(o);
    try {
      await tap.#listen();
      for (const ev of ['BLOCK_JOB_ERROR', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_COMPLETED'])
        tap.#unsubscribe.push(
          o.qmp.on(ev, (e) => {
            if ((e.data as { device?: string } | undefined)?.device === tap.#jobId && !tap.#stopped)
              tap.#break(
                `the mirror reported ${ev}${ev === 'BLOCK_JOB_ERROR' ? ' (the receiver failed a write)' : ''}`,
              );
          }),
        );
      tap.#mirror = await startWriteBlockingMirror(o.qmp, {
        device: o.device,
        jobId: tap.#jobId,
        socketPath: o.socketPath,
        exportName: o.device,
      });
      tap.#timer = setInterval(() => tap.#checkpoint(), o.checkpointMs);
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

  /** A checkpoint now (application-consistent ones are taken with the guest frozen around this). */
  async checkpoint(flags = 0): Promise<number> {
    return (await this.#o.journal.appendCheckpoint(flags)).seq;
  }

  /** Ends the tap: the mirror goes, then the receiver; the journal stays open (its owner's). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    for (const u of this.#unsubscribe.splice(0)) u();
    const mirror = this.#mirror;
    this.#mirror = null;
    if (mirror !== null) await stopWriteBlockingMirror(this.#o.qmp, mirror).catch(() => undefined);
    for (const s of this.#sockets) s.destroy();
    const server = this.#server;
    this.#server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.#o.socketPath, { force: true });
  }

  async #listen(): Promise<void> {
    await rm(this.#o.socketPath, { force: true });
    const receiver = new JournalReceiver(this.#o.journal, this.#o.sizeBytes);
    const exports = new Map([[this.#o.device, receiver]]);
    const server = createServer((s) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
      serveNbd(s, { exports, onError: (e) => this.#break(`the receiver failed: ${e.message}`) });
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#o.socketPath, () => resolve());
    });
  }

  #checkpoint(): void {
    if (this.#broken !== null) return;
    this.#o.journal
      .appendCheckpoint()
      .catch((e: unknown) => this.#break(`a checkpoint failed: ${(e as Error).message}`));
  }

  #break(reason: string): void {
    if (this.#broken !== null || this.#stopped) return;
    this.#broken = reason;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    // The mirror goes at once: a job that stays would copy what it missed later, out of order.
    const mirror = this.#mirror;
    this.#mirror = null;
    if (mirror !== null) void stopWriteBlockingMirror(this.#o.qmp, mirror).catch(() => undefined);
    this.#o.onBroken?.(reason);
  }
}

import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { MamoriError } from '../core/mamori-error.js';
import { replaceFileDurably } from '../core/durable-sync.js';
import type { Logger } from '../core/logger.js';
import { CHECKPOINT_FLAG } from './journal-format.js';
import { receiveJournal } from './journal-shipping.js';
import { WriteJournal } from './write-journal.js';
import type { JournalIndex } from './journal-index.js';
import type { JournalUsage } from './journal-forecast.js';

/*
 * The journals a recovery site keeps for its continuous replicas. The source journals in
 * sessions (replication/continuous-replication.ts): each begins over a new replica point, after
 * a pause, a stop of the VM, a resync or a restart. Each session's journal is an epoch of the
 * replica's: `<replica>/journal/e<NNNNNN>/` holds one journal per disk (`disk<N>`) and
 * `base.json`, the point its records replay over (the source's first checkpoint lies after it).
 * The epochs together are the replica's window of points in time; an epoch whose newest
 * checkpoint has left the window goes whole when the next begins. The folder lives inside the
 * replica's, so deleting the replica deletes its journals with it.
 *
 * One stream appends to a disk's journal at a time. A new one replaces the one before: after a
 * cut link the source dials again while the old connection may still look open here, and the
 * journal (not the connection) says where the new stream starts (journal-shipping.ts).
 */

export interface JournalBase {
  /** The replica point the journal's records apply over. */
  basePointId: string;
  disks: number[];
  startedAt: string;
  /** How long the replica's points in time are kept (ms); an older epoch goes. */
  windowMs: number;
}

/** One epoch's journals, for reading the replica at a point in time. */
export interface JournalEpoch {
  /** Its folder's name under the replica's journal (e000001, ...). */
  epoch: string;
  base: JournalBase;
  indexes: Map<number, JournalIndex>;
}

/** A checkpoint of every disk of the replica: one instant of the VM. */
export interface JournalCheckpoint {
  time: string;
  /** Its record in disk 0's journal (each disk numbers its own). */
  seq: number;
  applicationConsistent: boolean;
}

const BASE_FILE = 'base.json';
const EPOCH_NAME = /^e(\d{6})$/;
const DEFAULT_WINDOW_MS = 4 * 3600_000;

export class RecoveryJournals {
  readonly #root: string;
  readonly #log: Logger;
  readonly #open = new Map<string, Promise<WriteJournal>>();
  readonly #streams = new Map<string, { wire: Duplex; done: Promise<void> }>();

  constructor(deps: { root: string; log: Logger }) {
    this.#root = deps.root;
    this.#log = deps.log;
  }

  #folder(id: string, epoch?: string): string {
    return epoch === undefined ? join(this.#root, id, 'journal') : join(this.#root, id, 'journal', epoch);
  }

  /** The replica's epochs that hold a base, oldest first. */
  async #epochs(id: string): Promise<{ epoch: string; base: JournalBase }[]> {
    const names = await readdir(this.#folder(id)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return [] as string[];
      throw e;
    });
    const out: { epoch: string; base: JournalBase }[] = [];
    for (const epoch of names.filter((n) => EPOCH_NAME.test(n)).sort()) {
      const text = await readFile(join(this.#folder(id, epoch), BASE_FILE), 'utf8').catch(
        (e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') return null; // cut before its base was written: never received a record
          throw e;
        },
      );
      if (text !== null) out.push({ epoch, base: JSON.parse(text) as JournalBase });
    }
    return out;
  }

  /**
   * Starts a new epoch of the replica's journal over `basePointId`, for `disks`: the streams of
   * the one before are cut (its records stay, its points in time too), and epochs whose newest
   * checkpoint is older than the window go.
   */
  async begin(
    id: string,
    input: { basePointId: string; disks: number[]; windowMs?: number; keepAll?: boolean },
  ): Promise<JournalBase> {
    await this.close(id);
    const epochs = await this.#epochs(id);
    const last = epochs.at(-1)?.epoch;
    const epoch = `e${String(last === undefined ? 1 : Number(EPOCH_NAME.exec(last)![1]) + 1).padStart(6, '0')}`;
    // A recovered VM may stand on an epoch's point in time (its hold says so): none goes meanwhile.
    if (input.keepAll !== true) await this.#prune(id, epochs, input.windowMs ?? DEFAULT_WINDOW_MS);
    const folder = this.#folder(id, epoch);
    await rm(folder, { recursive: true, force: true });
    await mkdir(folder, { recursive: true, mode: 0o700 });
    const base: JournalBase = {
      basePointId: input.basePointId,
      disks: input.disks,
      startedAt: new Date().toISOString(),
      windowMs: input.windowMs ?? DEFAULT_WINDOW_MS,
    };
    await replaceFileDurably(join(folder, BASE_FILE), `${JSON.stringify(base)}\n`);
    for (const disk of input.disks) await this.#journal(id, epoch, disk);
    return base;
  }

  /** Epochs wholly out of the window go (their journals and, through retention, their base points). */
  async #prune(id: string, epochs: { epoch: string; base: JournalBase }[], windowMs: number): Promise<void> {
    const oldestUs = (Date.now() - windowMs) * 1000;
    for (const e of epochs) {
      const first = await this.#journal(id, e.epoch, e.base.disks[0]!);
      const newest = first.index.checkpoints().at(-1);
      if (newest !== undefined && newest.timeUs >= oldestUs) continue;
      await this.#closeEpoch(id, e.epoch);
      await rm(this.#folder(id, e.epoch), { recursive: true, force: true });
      this.#log.info({ replica: id, epoch: e.epoch }, 'a journal epoch left the window');
    }
  }

  /** The newest epoch's base (the one the source streams into), or null when the replica has no journal. */
  async base(id: string): Promise<JournalBase | null> {
    return (await this.#epochs(id)).at(-1)?.base ?? null;
  }

  /** The base point of every epoch kept: a replica's retention keeps them all. */
  async basePoints(id: string): Promise<string[]> {
    return (await this.#epochs(id)).map((e) => e.base.basePointId);
  }

  /** Receives a disk's records from the source until the stream ends; a stream before it is cut first. */
  async receive(id: string, disk: number, wire: Duplex): Promise<void> {
    const { epoch, base } = await this.#newest(id);
    if (!base.disks.includes(disk))
      throw new MamoriError(
        'NOT_FOUND',
        `replica ${id}'s journal has no disk ${disk} (it has ${base.disks.join(', ')})`,
      );
    const key = `${id}/${epoch}/${disk}`;
    const before = this.#streams.get(key);
    if (before !== undefined) {
      before.wire.destroy();
      await before.done;
    }
    const journal = await this.#journal(id, epoch, disk);
    const done = receiveJournal(journal, wire).catch((e: unknown) => {
      this.#log.warn({ replica: id, disk, err: (e as Error).message }, 'a journal stream ended with an error');
    });
    const entry = { wire, done };
    this.#streams.set(key, entry);
    await done;
    if (this.#streams.get(key) === entry) this.#streams.delete(key);
  }

  /**
   * The checkpoints every disk's journal holds, over all epochs, oldest first, within [from, to]
   * (µs since the epoch; either open). A checkpoint is one instant across a VM's disks: the
   * source appends it to each with the same time. Null when the replica has no journal.
   */
  async checkpoints(id: string, range: { fromUs?: number; toUs?: number } = {}): Promise<JournalCheckpoint[] | null> {
    const epochs = await this.#epochs(id);
    if (epochs.length === 0) return null;
    const out: JournalCheckpoint[] = [];
    for (const e of epochs) out.push(...(await this.#epochCheckpoints(id, e.epoch, e.base, range)));
    return out;
  }

  async #epochCheckpoints(
    id: string,
    epoch: string,
    base: JournalBase,
    range: { fromUs?: number; toUs?: number },
  ): Promise<JournalCheckpoint[]> {
    const journals = await Promise.all(base.disks.map((d) => this.#journal(id, epoch, d)));
    const [first, ...others] = journals;
    if (first === undefined) return [];
    const held = others.map((j) => new Set(j.index.checkpoints().map((c) => c.timeUs)));
    return first.index
      .checkpointsBetween(range.fromUs ?? -Infinity, range.toUs ?? Infinity)
      .filter((c) => c.seq <= first.durableSeq && held.every((s) => s.has(c.timeUs)))
      .map((c) => ({
        time: new Date(c.timeUs / 1000).toISOString(),
        seq: c.seq,
        applicationConsistent: (c.flags & CHECKPOINT_FLAG.applicationConsistent) !== 0,
      }));
  }

  /**
   * What the replica's journal holds now, for its forecast (journal-forecast.ts): the bytes of
   * every epoch kept, the oldest and newest checkpoint, and the window asked. Null without one.
   */
  async usage(id: string): Promise<JournalUsage | null> {
    const epochs = await this.#epochs(id);
    const newest = epochs.at(-1);
    if (newest === undefined) return null;
    let bytes = 0;
    let fromUs = Infinity;
    let toUs = -Infinity;
    for (const e of epochs) {
      bytes += await folderBytes(this.#folder(id, e.epoch));
      const cps = (await this.#journal(id, e.epoch, e.base.disks[0]!)).index.checkpoints();
      if (cps.length === 0) continue;
      fromUs = Math.min(fromUs, cps[0]!.timeUs);
      toUs = Math.max(toUs, cps.at(-1)!.timeUs);
    }
    const windowMs = newest.base.windowMs ?? DEFAULT_WINDOW_MS;
    return toUs < fromUs ? { bytes, fromUs: 0, toUs: 0, windowMs } : { bytes, fromUs, toUs, windowMs };
  }

  /**
   * The epoch that holds the newest checkpoint at or before `timeUs` (the journal keeps
   * growing: what a reader takes is what lies before its checkpoint); null when none does.
   */
  async epochAt(id: string, timeUs: number): Promise<JournalEpoch | null> {
    const epochs = await this.#epochs(id);
    for (const e of [...epochs].reverse()) {
      if ((await this.#epochCheckpoints(id, e.epoch, e.base, { toUs: timeUs })).length === 0) continue;
      const indexes = new Map<number, JournalIndex>();
      for (const d of e.base.disks) indexes.set(d, (await this.#journal(id, e.epoch, d)).index);
      return { epoch: e.epoch, base: e.base, indexes };
    }
    return null;
  }

  /** Cuts the replica's streams and closes its journals (before the replica is deleted, or at shutdown). */
  async close(id: string): Promise<void> {
    await this.#closeEpoch(id, '');
  }

  /** Cuts the streams and closes the journals under `<id>/<epoch>` (every epoch's for '': the prefix is `<id>/`). */
  async #closeEpoch(id: string, epoch: string): Promise<void> {
    const prefix = epoch === '' ? `${id}/` : `${id}/${epoch}/`;
    for (const [key, s] of [...this.#streams]) {
      if (!key.startsWith(prefix)) continue;
      s.wire.destroy();
      await s.done;
    }
    for (const [key, j] of [...this.#open]) {
      if (!key.startsWith(prefix)) continue;
      this.#open.delete(key);
      await (await j.catch(() => null))?.close();
    }
  }

  async closeAll(): Promise<void> {
    const ids = new Set([...this.#open.keys(), ...this.#streams.keys()].map((k) => k.split('/')[0]!));
    for (const id of ids) await this.close(id);
  }

  async #newest(id: string): Promise<{ epoch: string; base: JournalBase }> {
    const newest = (await this.#epochs(id)).at(-1);
    if (newest === undefined)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `replica ${id} has no journal: the source starts one when continuous replication begins`,
      );
    return newest;
  }

  #journal(id: string, epoch: string, disk: number): Promise<WriteJournal> {
    const key = `${id}/${epoch}/${disk}`;
    let j = this.#open.get(key);
    if (j === undefined) {
      j = WriteJournal.open(join(this.#folder(id, epoch), `disk${disk}`));
      j.catch(() => this.#open.delete(key));
      this.#open.set(key, j);
    }
    return j;
  }
}

/** The bytes of the files under `dir`. */
async function folderBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await folderBytes(p);
    else if (e.isFile()) n += (await stat(p).catch(() => ({ size: 0 }))).size;
  }
  return n;
}

import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { MamoriError } from '../core/mamori-error.js';
import { replaceFileDurably } from '../core/durable-sync.js';
import type { Logger } from '../core/logger.js';
import { CHECKPOINT_FLAG } from './journal-format.js';
import { receiveJournal } from './journal-shipping.js';
import { WriteJournal } from './write-journal.js';
import type { JournalIndex } from './journal-index.js';

/*
 * The journals a recovery site keeps for its continuous replicas: per replica, one journal per
 * disk in `<replica>/journal/disk<N>`, over the replica point named in `<replica>/journal/base.json`
 * (the point the source's first checkpoint lies after). The folder lives inside the replica's,
 * so deleting the replica deletes its journal with it.
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
}

/** A checkpoint of every disk of the replica: one instant of the VM. */
export interface JournalCheckpoint {
  time: string;
  /** Its record in disk 0's journal (each disk numbers its own). */
  seq: number;
  applicationConsistent: boolean;
}

const BASE_FILE = 'base.json';

export class RecoveryJournals {
  readonly #root: string;
  readonly #log: Logger;
  readonly #open = new Map<string, Promise<WriteJournal>>();
  readonly #streams = new Map<string, { wire: Duplex; done: Promise<void> }>();

  constructor(deps: { root: string; log: Logger }) {
    this.#root = deps.root;
    this.#log = deps.log;
  }

  #folder(id: string): string {
    return join(this.#root, id, 'journal');
  }

  /**
   * Starts the replica's journal over `basePointId`, for `disks`: a journal there before (an
   * earlier protection of the VM, cut by a resync) is closed and removed.
   */
  async begin(id: string, input: { basePointId: string; disks: number[] }): Promise<JournalBase> {
    await this.close(id);
    const folder = this.#folder(id);
    await rm(folder, { recursive: true, force: true });
    await mkdir(folder, { recursive: true, mode: 0o700 });
    const base: JournalBase = { ...input, startedAt: new Date().toISOString() };
    await replaceFileDurably(join(folder, BASE_FILE), `${JSON.stringify(base)}\n`);
    for (const disk of input.disks) await this.#journal(id, disk);
    return base;
  }

  /** The replica's journal base, or null when it has no journal. */
  async base(id: string): Promise<JournalBase | null> {
    const text = await readFile(join(this.#folder(id), BASE_FILE), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    return text === null ? null : (JSON.parse(text) as JournalBase);
  }

  /** Receives a disk's records from the source until the stream ends; a stream before it is cut first. */
  async receive(id: string, disk: number, wire: Duplex): Promise<void> {
    const base = await this.#requireBase(id);
    if (!base.disks.includes(disk))
      throw new MamoriError(
        'NOT_FOUND',
        `replica ${id}'s journal has no disk ${disk} (it has ${base.disks.join(', ')})`,
      );
    const key = `${id}/${disk}`;
    const before = this.#streams.get(key);
    if (before !== undefined) {
      before.wire.destroy();
      await before.done;
    }
    const journal = await this.#journal(id, disk);
    const done = receiveJournal(journal, wire).catch((e: unknown) => {
      this.#log.warn({ replica: id, disk, err: (e as Error).message }, 'a journal stream ended with an error');
    });
    const entry = { wire, done };
    this.#streams.set(key, entry);
    await done;
    if (this.#streams.get(key) === entry) this.#streams.delete(key);
  }

  /**
   * The checkpoints every disk's journal holds, oldest first, within [from, to] (µs since the
   * epoch; either open). A checkpoint is one instant across a VM's disks: the source appends it
   * to each with the same time. Null when the replica has no journal.
   */
  async checkpoints(id: string, range: { fromUs?: number; toUs?: number } = {}): Promise<JournalCheckpoint[] | null> {
    const base = await this.base(id);
    if (base === null) return null;
    const journals = await Promise.all(base.disks.map((d) => this.#journal(id, d)));
    const [first, ...others] = journals;
    if (first === undefined) return [];
    const held = others.map((j) => new Set(j.index.checkpoints().map((c) => c.timeUs)));
    const fromUs = range.fromUs ?? -Infinity;
    const toUs = range.toUs ?? Infinity;
    return first.index
      .checkpointsBetween(fromUs, toUs)
      .filter((c) => c.seq <= first.durableSeq && held.every((s) => s.has(c.timeUs)))
      .map((c) => ({
        time: new Date(c.timeUs / 1000).toISOString(),
        seq: c.seq,
        applicationConsistent: (c.flags & CHECKPOINT_FLAG.applicationConsistent) !== 0,
      }));
  }

  /** Each disk's journal index (the journal keeps growing: what a reader takes is what lies before its checkpoint). */
  async indexes(id: string): Promise<Map<number, JournalIndex>> {
    const base = await this.#requireBase(id);
    const out = new Map<number, JournalIndex>();
    for (const d of base.disks) out.set(d, (await this.#journal(id, d)).index);
    return out;
  }

  /** Cuts the replica's streams and closes its journals (before the replica is deleted, or at shutdown). */
  async close(id: string): Promise<void> {
    for (const [key, s] of [...this.#streams]) {
      if (!key.startsWith(`${id}/`)) continue;
      s.wire.destroy();
      await s.done;
    }
    for (const [key, j] of [...this.#open]) {
      if (!key.startsWith(`${id}/`)) continue;
      this.#open.delete(key);
      await (await j.catch(() => null))?.close();
    }
  }

  async closeAll(): Promise<void> {
    const ids = new Set([...this.#open.keys(), ...this.#streams.keys()].map((k) => k.split('/')[0]!));
    for (const id of ids) await this.close(id);
  }

  async #requireBase(id: string): Promise<JournalBase> {
    const base = await this.base(id);
    if (base === null)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `replica ${id} has no journal: the source starts one when continuous replication begins`,
      );
    return base;
  }

  #journal(id: string, disk: number): Promise<WriteJournal> {
    const key = `${id}/${disk}`;
    let j = this.#open.get(key);
    if (j === undefined) {
      j = WriteJournal.open(join(this.#folder(id), `disk${disk}`));
      j.catch(() => this.#open.delete(key));
      this.#open.set(key, j);
    }
    return j;
  }
}

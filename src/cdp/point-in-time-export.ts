import { open, type FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import type { NbdExportBackend } from '../nbd/nbd-server.js';
import { ExtentOverlayMap } from './extent-overlay-map.js';
import type { JournalIndex } from './journal-index.js';

/** What lies under the journal: the replica's base, read through whatever serves it (an NbdClient). */
export interface BaseReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

/**
 * A disk as it was at one checkpoint of its journal: the base, with every journal record up to
 * that checkpoint laid over it in order. Read-only, served by nbd-server.ts: a VM recovered at
 * that instant boots from it (an overlay above takes its writes), with nothing copied first.
 * Nothing is read until asked: each read takes what the map says from the segments, and the
 * gaps from the base.
 */
export class PointInTimeExport implements NbdExportBackend {
  readonly readOnly = true;
  readonly checkpointSeq: number;
  readonly timeUs: number;
  readonly #index: JournalIndex;
  readonly #base: BaseReader;
  readonly #map = new ExtentOverlayMap();
  readonly #files = new Map<number, Promise<FileHandle>>();

  constructor(index: JournalIndex, checkpointSeq: number, base: BaseReader) {
    const cp = index.get(checkpointSeq);
    if (cp.kind !== 'checkpoint')
      throw new MamoriError('INVALID_INPUT', `journal record ${checkpointSeq} is a ${cp.kind}, not a checkpoint`);
    this.#index = index;
    this.#base = base;
    this.checkpointSeq = checkpointSeq;
    this.timeUs = cp.timeUs;
    for (let seq = index.firstSeq; seq < checkpointSeq; seq++) {
      const e = index.get(seq);
      if (e.kind === 'write' || e.kind === 'zero') this.#map.apply(e.offset, e.offset + e.length, seq);
    }
  }

  get size(): number {
    return this.#base.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    let at = offset;
    const end = offset + length;
    const reads: Promise<void>[] = [];
    const fromBase = (from: number, to: number): void => {
      reads.push(this.#base.read(from, to - from).then((b) => void b.copy(out, from - offset)));
    };
    for (const x of this.#map.overlapping(offset, end)) {
      if (x.start > at) fromBase(at, x.start);
      const e = this.#index.get(x.seq);
      if (e.kind === 'write')
        reads.push(
          this.#readPayload(e.segment, e.payloadAt + (x.start - e.offset), out, x.start - offset, x.end - x.start),
        );
      // a zero record: the buffer is zeros already
      at = x.end;
    }
    if (at < end) fromBase(at, end);
    await Promise.all(reads);
    return out;
  }

  write(): Promise<void> {
    return Promise.reject(new MamoriError('INVALID_INPUT', 'a point in time is read-only'));
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  async close(): Promise<void> {
    const files = [...this.#files.values()];
    this.#files.clear();
    for (const f of files) await (await f).close();
  }

  async #readPayload(segment: number, position: number, into: Buffer, at: number, length: number): Promise<void> {
    let f = this.#files.get(segment);
    if (f === undefined) {
      f = open(this.#index.segments[segment]!, 'r');
      this.#files.set(segment, f);
    }
    const { bytesRead } = await (await f).read(into, at, length, position);
    if (bytesRead !== length)
      throw new MamoriError('JOURNAL_CORRUPT', `journal segment ${this.#index.segments[segment]} ends inside a record`);
  }
}

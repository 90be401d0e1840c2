import { open, type FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import {
  RECORD_HEADER_BYTES,
  decodeRecordHeader,
  payloadBytes,
  recordBytes,
  type JournalRecordHeader,
} from './journal-format.js';
import type { JournalIndex } from './journal-index.js';

/** Records as they lie in a segment, one after another: their headers decoded, and their bytes. */
export interface StoredRun {
  headers: JournalRecordHeader[];
  /** Every record's header and payload, in order. */
  bytes: Buffer;
}

/**
 * Reads records [fromSeq, toSeq] back from the segments, in order, at most about `maxBytes` at
 * a time (shipping sends them as they lie: the receiver checks every checksum again).
 */
export class JournalRecordReader {
  readonly #index: JournalIndex;
  readonly #files = new Map<number, Promise<FileHandle>>();

  constructor(index: JournalIndex) {
    this.#index = index;
  }

  /**
   * The records from `fromSeq` on that lie in its segment, up to `toSeq` and about `maxBytes`:
   * one read for the run (a second of 4 KiB writes is thousands of records), each header
   * checked as it is found.
   */
  async read(fromSeq: number, toSeq: number, maxBytes: number): Promise<StoredRun> {
    const first = this.#index.get(fromSeq);
    const start = first.payloadAt - RECORD_HEADER_BYTES;
    let end = fromSeq;
    let length = recordBytes(first);
    while (end < toSeq && length < maxBytes) {
      const e = this.#index.get(end + 1);
      if (e.segment !== first.segment) break;
      length += recordBytes(e);
      end += 1;
    }
    const bytes = Buffer.allocUnsafe(length);
    const { bytesRead } = await (await this.#file(first.segment)).read(bytes, 0, length, start);
    const headers: JournalRecordHeader[] = [];
    for (let seq = fromSeq, at = 0; seq <= end; seq++) {
      const header = at + RECORD_HEADER_BYTES <= bytesRead ? decodeRecordHeader(bytes.subarray(at)) : null;
      const n = header === null || 'invalid' in header ? -1 : payloadBytes(header);
      if (header === null || 'invalid' in header || header.seq !== seq || at + RECORD_HEADER_BYTES + n > bytesRead)
        throw new MamoriError('JOURNAL_CORRUPT', `journal record ${seq} does not read back as written`);
      headers.push(header);
      at += RECORD_HEADER_BYTES + n;
    }
    return { headers, bytes };
  }

  async close(): Promise<void> {
    const files = [...this.#files.values()];
    this.#files.clear();
    for (const f of files) await (await f).close();
  }

  #file(segment: number): Promise<FileHandle> {
    let f = this.#files.get(segment);
    if (f === undefined) {
      f = open(this.#index.segments[segment]!, 'r');
      this.#files.set(segment, f);
    }
    return f;
  }
}

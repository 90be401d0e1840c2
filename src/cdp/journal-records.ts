import { open, type FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import { RECORD_HEADER_BYTES, decodeRecordHeader, payloadBytes, type JournalRecordHeader } from './journal-format.js';
import type { JournalIndex } from './journal-index.js';

/** One record as it lies in its segment: its header decoded, and its bytes (header and payload). */
export interface StoredRecord {
  header: JournalRecordHeader;
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

  async read(fromSeq: number, toSeq: number, maxBytes: number): Promise<StoredRecord[]> {
    const out: StoredRecord[] = [];
    let bytes = 0;
    for (let seq = fromSeq; seq <= toSeq && (out.length === 0 || bytes < maxBytes); seq++) {
      const e = this.#index.get(seq);
      const length = RECORD_HEADER_BYTES + (e.kind === 'write' ? e.length : 0);
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await (await this.#file(e.segment)).read(buf, 0, length, e.payloadAt - RECORD_HEADER_BYTES);
      const header = decodeRecordHeader(buf);
      if (
        bytesRead !== length ||
        'invalid' in header ||
        header.seq !== seq ||
        payloadBytes(header) !== length - RECORD_HEADER_BYTES
      )
        throw new MamoriError('JOURNAL_CORRUPT', `journal record ${seq} does not read back as written`);
      out.push({ header, bytes: buf });
      bytes += length;
    }
    return out;
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

import { open, type FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';

/*
 * The log QEMU's blklogwrites driver writes (the dm-log-writes format, little-endian): a
 * superblock in sector 0, then one entry after another from sector 1, each a header sector
 * followed by its data sectors.
 *
 *   superblock  magic u64, version u64, nr_entries u64, sectorsize u32
 *   entry       sector u64, nr_sectors u64, flags u64, data_len u64 (always 0 from QEMU)
 *
 * A write's entry carries its data. A write-zeroes' entry carries as many zero sectors (QEMU
 * writes them after the header), so it reads as a write of zeros. A discard's entry has no
 * data; a flush's entry has neither range nor data. QEMU counts an entry in nr_entries when it
 * begins it, before its bytes are written: only a prefix QEMU has drained since is known whole
 * (cdp/qemu-write-log.ts), and nothing here reads past the count it is given.
 */

export const WRITE_LOG_MAGIC = 0x6a736677736872n;
const FLAG_FLUSH = 1n;
const FLAG_FUA = 2n;
const FLAG_DISCARD = 4n;
const FLAG_MARK = 8n;
const KNOWN_FLAGS = FLAG_FLUSH | FLAG_FUA | FLAG_DISCARD | FLAG_MARK;

export interface WriteLogSuperblock {
  /** Entries QEMU has begun, as of its last superblock write (it writes one at each flush entry). */
  entries: number;
  sectorSize: number;
}

export type WriteLogEntry =
  | { index: number; kind: 'write'; offset: number; data: Buffer }
  | { index: number; kind: 'discard'; offset: number; length: number }
  | { index: number; kind: 'flush' };

function corrupt(path: string, what: string): MamoriError {
  return new MamoriError('JOURNAL_CORRUPT', `the write log ${path} is not whole: ${what}`, { details: { path } });
}

/** Parses a superblock; null when the log has none yet (QEMU writes it at the first flush). */
export function parseWriteLogSuperblock(buf: Buffer, path: string): WriteLogSuperblock | null {
  if (buf.length < 28 || buf.readBigUInt64LE(0) === 0n) return null;
  if (buf.readBigUInt64LE(0) !== WRITE_LOG_MAGIC) throw corrupt(path, 'its superblock has the wrong magic');
  if (buf.readBigUInt64LE(8) !== 1n) throw corrupt(path, `version ${buf.readBigUInt64LE(8)} is not 1`);
  const sectorSize = buf.readUInt32LE(24);
  if (sectorSize < 512 || (sectorSize & (sectorSize - 1)) !== 0) throw corrupt(path, `sector size ${sectorSize}`);
  return { entries: Number(buf.readBigUInt64LE(16)), sectorSize };
}

/**
 * Reads a write log's entries in order, from where the last read stopped: the shipper's cursor
 * over a file QEMU keeps appending to. Each read is bounded by an entry count known whole.
 */
export class WriteLogReader {
  readonly #path: string;
  readonly #fh: FileHandle;
  readonly #sectorSize: number;
  #index = 0;
  #offset: number;

  private constructor(path: string, fh: FileHandle, sectorSize: number) {
    this.#path = path;
    this.#fh = fh;
    this.#sectorSize = sectorSize;
    this.#offset = sectorSize;
  }

  /** `sectorSize`: the log's (blklogwrites' log-sector-size, 512 unless set). */
  static async open(path: string, sectorSize = 512): Promise<WriteLogReader> {
    return new WriteLogReader(path, await open(path, 'r'), sectorSize);
  }

  /** Entries read so far: the index of the next. */
  get next(): number {
    return this.#index;
  }

  /** The byte where the next entry begins: everything before it (but the superblock) is read. */
  get offset(): number {
    return this.#offset;
  }

  async superblock(): Promise<WriteLogSuperblock | null> {
    const buf = Buffer.alloc(this.#sectorSize);
    await this.#fh.read(buf, 0, buf.length, 0);
    return parseWriteLogSuperblock(buf, this.#path);
  }

  /** The entries from the cursor up to (not including) entry `end`, in log order. */
  async *readTo(end: number): AsyncGenerator<WriteLogEntry> {
    // Read ahead in chunks, not two reads an entry (a log of 4 KiB writes is thousands a
    // second). A chunk may run past entry `end` into bytes QEMU is still writing: those are
    // never parsed here, and the chunk is dropped when this call ends, so a later call reads
    // them again once they are whole.
    const chunks = new ReadAhead(this.#fh);
    while (this.#index < end) {
      const header = await chunks.bytes(this.#offset, this.#sectorSize);
      if (header.length < this.#sectorSize)
        throw corrupt(this.#path, `entry ${this.#index} is cut short at byte ${this.#offset}`);
      const sector = header.readBigUInt64LE(0);
      const sectors = header.readBigUInt64LE(8);
      const flags = header.readBigUInt64LE(16);
      if ((flags & ~KNOWN_FLAGS) !== 0n)
        throw corrupt(this.#path, `entry ${this.#index} has flags 0x${flags.toString(16)}`);
      const index = this.#index;
      const offset = Number(sector) * this.#sectorSize;
      const length = Number(sectors) * this.#sectorSize;
      if ((flags & FLAG_FLUSH) !== 0n && sectors === 0n) {
        this.#advance(this.#sectorSize);
        yield { index, kind: 'flush' };
      } else if ((flags & FLAG_DISCARD) !== 0n) {
        this.#advance(this.#sectorSize);
        yield { index, kind: 'discard', offset, length };
      } else {
        if (sectors === 0n) throw corrupt(this.#path, `entry ${this.#index} at byte ${this.#offset} is empty`);
        const data = await chunks.bytes(this.#offset + this.#sectorSize, length);
        if (data.length < length) throw corrupt(this.#path, `entry ${this.#index}'s data is cut short`);
        this.#advance(this.#sectorSize + length);
        yield { index, kind: 'write', offset, data };
      }
    }
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }

  #advance(bytes: number): void {
    this.#offset += bytes;
    this.#index += 1;
  }
}

/** Bytes read from the log in chunks of at least this many (one read for many small entries). */
const READ_AHEAD_BYTES = 1024 * 1024;

/**
 * Forward reads of a file through chunks. Each chunk is a buffer of its own, never reused: the
 * views handed out stay valid while their reader holds them.
 */
class ReadAhead {
  readonly #fh: FileHandle;
  #chunk: Buffer = Buffer.alloc(0);
  #at = 0;

  constructor(fh: FileHandle) {
    this.#fh = fh;
  }

  /** `n` bytes at `at` (fewer where the file ends). */
  async bytes(at: number, n: number): Promise<Buffer> {
    if (at >= this.#at && at + n <= this.#at + this.#chunk.length)
      return this.#chunk.subarray(at - this.#at, at - this.#at + n);
    const chunk = Buffer.allocUnsafe(Math.max(n, READ_AHEAD_BYTES));
    const got = (await this.#fh.read(chunk, 0, chunk.length, at)).bytesRead;
    this.#chunk = chunk.subarray(0, got);
    this.#at = at;
    return this.#chunk.subarray(0, Math.min(n, got));
  }
}

import { mkdir, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { syncDirectory } from '../core/durable-sync.js';
import {
  RECORD_HEADER_BYTES,
  SEGMENT_HEADER_BYTES,
  decodeRecordHeader,
  decodeSegmentHeader,
  encodeRecordHeader,
  encodeSegmentHeader,
  payloadBytes,
  payloadMatches,
  type JournalRecordHeader,
  type RecordKind,
} from './journal-format.js';
import { JournalIndex } from './journal-index.js';

/*
 * A continuous-replication journal in one folder: segment files appended in sequence order
 * (journal-format.ts), and the index of every record they hold (journal-index.ts). Opening it
 * scans the segments; a tail cut by a crash (a record whose header or payload does not check)
 * is cut off the last segment. Appends are group-committed: each resolves once its record and
 * every record before it are on stable storage (one fdatasync for what arrived meanwhile).
 */

/** A new segment once the current one holds this much (default). */
const SEGMENT_BYTES = 64 * 1024 * 1024;
const SEGMENT_NAME = /^seg-(\d{16})\.mjl$/;

export interface WriteJournalOptions {
  segmentBytes?: number;
  /** The clock records are stamped with, in µs since the epoch (tests move it by hand). */
  nowUs?: () => number;
  /**
   * false: a batch counts as durable once written, without fdatasync. For a journal nothing
   * relies on after a crash: the protected site's session journal, a buffer between the tap and
   * the link, deleted at the next session's start (its VM resyncs from the bitmap then); only the
   * recovery site's copy, synced, is what an acknowledgment promises.
   */
  sync?: boolean;
}

export interface AppendedRecord {
  seq: number;
  timeUs: number;
}

interface Pending {
  parts: Buffer[];
  bytes: number;
  record: { kind: RecordKind; flags: number; seq: number; timeUs: number; offset: number; length: number };
  resolve: () => void;
  reject: (e: Error) => void;
}

export class WriteJournal {
  readonly dir: string;
  readonly index: JournalIndex;
  readonly #segmentBytes: number;
  readonly #nowUs: () => number;
  readonly #sync: boolean;
  #fh: FileHandle | null;
  #segmentSize: number;
  #queue: Pending[] = [];
  #flushing: Promise<void> | null = null;
  #failed: Error | null = null;
  #lastTimeUs = 0;
  /** The next record's sequence number: records queued are not in the index yet. */
  #nextSeq: number;
  /** The last record on stable storage (the index may already list records still being synced). */
  #durableSeq: number;
  #durableWaiters: (() => void)[] = [];
  #closed = false;

  private constructor(dir: string, index: JournalIndex, fh: FileHandle | null, size: number, o: WriteJournalOptions) {
    this.dir = dir;
    this.index = index;
    this.#fh = fh;
    this.#segmentSize = size;
    this.#segmentBytes = o.segmentBytes ?? SEGMENT_BYTES;
    this.#nowUs = o.nowUs ?? (() => Date.now() * 1000);
    this.#sync = o.sync ?? true;
    this.#nextSeq = index.nextSeq;
    this.#durableSeq = index.nextSeq - 1;
  }

  /** Opens (or creates) the journal in `dir`, cutting a torn tail off its last segment. */
  static async open(dir: string, options: WriteJournalOptions = {}): Promise<WriteJournal> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const index = new JournalIndex();
    let names = (await readdir(dir)).filter((n) => SEGMENT_NAME.test(n)).sort();
    // A crash between creating the newest segment and syncing its header leaves it short: it
    // holds no record, so it goes (the next append makes it again).
    const newest = names.at(-1);
    if (newest !== undefined && (await stat(join(dir, newest))).size < SEGMENT_HEADER_BYTES) {
      await unlink(join(dir, newest));
      await syncDirectory(dir);
      names = names.slice(0, -1);
    }
    let last: { fh: FileHandle; size: number } | null = null;
    for (const [k, name] of names.entries()) {
      const fh = await open(join(dir, name), 'r+');
      try {
        const end = await scanSegment(fh, join(dir, name), index, k === 0);
        if (k < names.length - 1) {
          await fh.close();
        } else {
          const { size } = await fh.stat();
          if (end < size) await fh.truncate(end); // the torn tail of a crash
          last = { fh, size: end };
        }
      } catch (e) {
        await fh.close();
        throw e;
      }
    }
    const journal = new WriteJournal(dir, index, last?.fh ?? null, last?.size ?? 0, options);
    if (index.count > 0) journal.#lastTimeUs = index.get(index.nextSeq - 1).timeUs;
    return journal;
  }

  /**
   * Guest data written at `offset`. `data` is copied before this returns. `timeUs`: when the
   * write is known to have happened by, for writes read from a log behind the guest (never
   * before the journal's last record); now, when not given.
   */
  appendWrite(offset: number, data: Buffer, timeUs?: number): Promise<AppendedRecord> {
    const late = this.#goesBack(timeUs);
    return late ?? this.#append('write', 0, offset, data.length, Buffer.from(data), timeUs);
  }

  /** The range reads as zeros from here on (`timeUs` as for appendWrite). */
  appendZero(offset: number, length: number, timeUs?: number): Promise<AppendedRecord> {
    return this.#goesBack(timeUs) ?? this.#append('zero', 0, offset, length, null, timeUs);
  }

  #goesBack(timeUs: number | undefined): Promise<never> | null {
    if (timeUs === undefined || timeUs >= this.#lastTimeUs) return null;
    return Promise.reject(
      new MamoriError('INVALID_INPUT', `a record at ${timeUs} µs would go back before the journal's last record`),
    );
  }

  /**
   * A consistent instant of everything appended before it. `timeUs` names the instant, the
   * same in every journal of one VM or group (at least lastTimeUs of each: time never goes back).
   */
  appendCheckpoint(flags = 0, timeUs?: number): Promise<AppendedRecord> {
    return this.#goesBack(timeUs) ?? this.#append('checkpoint', flags, 0, 0, null, timeUs);
  }

  /**
   * Many writes and zeroed ranges at once, in order, all at `timeUs` (as for appendWrite): one
   * promise for the lot, resolved once the last is durable, where a record each cost the pump
   * a promise and a copy per 4 KiB write. The data buffers are taken as they are, not copied:
   * the caller must not change them after.
   */
  appendMany(records: readonly JournalWrite[], timeUs: number): Promise<AppendedRecord | null> {
    const late = this.#goesBack(timeUs);
    if (late !== null) return late;
    if (records.length === 0) return Promise.resolve(null);
    return this.#appendAll(
      records.map((r) =>
        r.kind === 'write'
          ? { kind: 'write' as const, flags: 0, offset: r.offset, length: r.data.length, payload: r.data, timeUs }
          : { kind: 'zero' as const, flags: 0, offset: r.offset, length: r.length, payload: null, timeUs },
      ),
    );
  }

  /**
   * Records another journal wrote (shipping keeps the source's numbers and times), at once: each
   * must be the next one, and its payload must match its checksum, all checked before any is
   * queued. One promise for the lot, resolved once the last is durable. Payloads are taken as
   * they are, not copied.
   */
  appendReplicatedMany(
    records: readonly { header: JournalRecordHeader; payload: Buffer | null }[],
  ): Promise<AppendedRecord | null> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    for (const [k, { header: r, payload }] of records.entries()) {
      if (r.seq !== this.#nextSeq + k)
        return Promise.reject(
          new MamoriError(
            'JOURNAL_CORRUPT',
            `record ${r.seq} arrived where ${this.#nextSeq + k} was due: the stream skipped or repeated`,
          ),
        );
      if (payloadBytes(r) !== (payload?.length ?? 0) || (payload !== null && !payloadMatches(r, payload)))
        return Promise.reject(
          new MamoriError('JOURNAL_CORRUPT', `record ${r.seq} arrived with a payload that does not match it`),
        );
    }
    if (records.length === 0) return Promise.resolve(null);
    return this.#appendAll(
      records.map(({ header: r, payload }) => ({
        kind: r.kind,
        flags: r.flags,
        offset: r.offset,
        length: r.length,
        payload,
        timeUs: r.timeUs,
      })),
    );
  }

  /** The time of the newest record appended (0 when there is none). */
  get lastTimeUs(): number {
    return this.#lastTimeUs;
  }

  /** Why appends fail, once one write of the journal failed (null while it is whole). */
  get failure(): Error | null {
    return this.#failed;
  }

  /** The last record on stable storage (firstSeq - 1 when there is none). */
  get durableSeq(): number {
    return this.#durableSeq;
  }

  /** Resolves once a record after `seq` is durable, or the journal failed (at once if either is so). */
  durableAfter(seq: number): Promise<void> {
    if (this.#durableSeq > seq || this.#failed !== null) return Promise.resolve();
    return new Promise((resolve) => this.#durableWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#drain();
    await this.#fh?.close();
    this.#fh = null;
  }

  /** One record; its time is now, when not given (never before the last record's). */
  #append(
    kind: RecordKind,
    flags: number,
    offset: number,
    length: number,
    payload: Buffer | null,
    givenTimeUs?: number,
  ): Promise<AppendedRecord> {
    const timeUs = givenTimeUs ?? Math.max(this.#nowUs(), this.#lastTimeUs);
    return this.#appendAll([{ kind, flags, offset, length, payload, timeUs }]);
  }

  /**
   * Queues records in order; one promise, settled with the last (batches are written in order).
   * Sequence numbers are taken here, synchronously, in call order: that order is the journal's.
   */
  #appendAll(
    records: {
      kind: RecordKind;
      flags: number;
      offset: number;
      length: number;
      payload: Buffer | null;
      timeUs: number;
    }[],
  ): Promise<AppendedRecord> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    if (this.#closed)
      return Promise.reject(new MamoriError('JOURNAL_WRITE_FAILED', `the journal in ${this.dir} is closed`));
    let last: AppendedRecord = { seq: 0, timeUs: 0 };
    return new Promise<AppendedRecord>((resolve, reject) => {
      for (const [k, r] of records.entries()) {
        const seq = this.#nextSeq++;
        // As given: checked against the last record by the caller, or a replicated one keeps the source's.
        const timeUs = r.timeUs;
        this.#lastTimeUs = Math.max(this.#lastTimeUs, timeUs);
        const record = { kind: r.kind, flags: r.flags, seq, timeUs, offset: r.offset, length: r.length };
        const header = encodeRecordHeader(record, r.payload);
        last = { seq, timeUs };
        const final = k === records.length - 1;
        this.#queue.push({
          parts: r.payload === null ? [header] : [header, r.payload],
          bytes: header.length + (r.payload?.length ?? 0),
          record,
          resolve: final ? () => resolve(last) : noop,
          reject: final ? reject : noop,
        });
      }
      this.#kick();
    });
  }

  #kick(): void {
    if (this.#flushing !== null) return;
    this.#flushing = this.#flushLoop().finally(() => {
      this.#flushing = null;
      // Appended after the loop found the queue empty and before this ran (a caller resumed by
      // the loop's last batch, appending at once): no loop would write it otherwise.
      if (this.#queue.length > 0) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    while (this.#flushing !== null) await this.#flushing;
  }

  /** Writes what is queued, in order, one fdatasync per batch; then resolves the batch. */
  async #flushLoop(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        for (let k = 0; k < batch.length;) {
          if (this.#fh === null || this.#segmentSize >= this.#segmentBytes)
            await this.#newSegment(batch[k]!.record.seq);
          // As many records as fit in this segment go out in one writev.
          const start = k;
          let bytes = 0;
          while (
            k < batch.length &&
            (k === start || this.#segmentSize + bytes + batch[k]!.bytes <= this.#segmentBytes)
          ) {
            bytes += batch[k]!.bytes;
            k++;
          }
          const segment = this.index.segments.length - 1;
          let at = this.#segmentSize;
          await this.#fh!.writev(
            batch.slice(start, k).flatMap((p) => p.parts),
            this.#segmentSize,
          );
          for (let j = start; j < k; j++) {
            this.index.add({ ...batch[j]!.record, segment, payloadAt: at + RECORD_HEADER_BYTES });
            at += batch[j]!.bytes;
          }
          this.#segmentSize += bytes;
        }
        if (this.#sync) await this.#fh!.datasync();
        this.#durableSeq = batch.at(-1)!.record.seq;
        for (const p of batch) p.resolve();
        const waiters = this.#durableWaiters;
        this.#durableWaiters = [];
        for (const w of waiters) w();
      } catch (e) {
        // A journal that failed to write is no longer known to be whole: every later append fails too.
        this.#failed = new MamoriError(
          'JOURNAL_WRITE_FAILED',
          `writing the journal in ${this.dir} failed: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
        for (const p of [...batch, ...this.#queue]) p.reject(this.#failed);
        for (const w of this.#durableWaiters.splice(0)) w();
        this.#queue = [];
        return;
      }
    }
  }

  async #newSegment(firstSeq: number): Promise<void> {
    if (this.#fh !== null) await this.#fh.close();
    const name = `seg-${String(firstSeq).padStart(16, '0')}.mjl`;
    const fh = await open(join(this.dir, name), 'wx', 0o600);
    await fh.write(encodeSegmentHeader(firstSeq, Math.floor(this.#nowUs() / 1000)), 0, SEGMENT_HEADER_BYTES, 0);
    if (this.#sync) {
      await fh.datasync();
      await syncDirectory(this.dir);
    }
    if (this.index.count === 0) this.index.startAt(firstSeq);
    this.index.addSegment(join(this.dir, name));
    this.#fh = fh;
    this.#segmentSize = SEGMENT_HEADER_BYTES;
  }
}

/** A guest write or zeroed range for appendMany. */
export type JournalWrite =
  { kind: 'write'; offset: number; data: Buffer } | { kind: 'zero'; offset: number; length: number };

function noop(): void {}

/** Adds a segment's records to the index; returns where its valid records end. */
async function scanSegment(fh: FileHandle, path: string, index: JournalIndex, first: boolean): Promise<number> {
  const { size } = await fh.stat();
  const head = Buffer.alloc(SEGMENT_HEADER_BYTES);
  await fh.read(head, 0, SEGMENT_HEADER_BYTES, 0);
  const h = decodeSegmentHeader(head);
  if (h === null)
    throw new MamoriError(
      'JOURNAL_CORRUPT',
      `${path} is not a journal segment (bad header): the journal cannot be read`,
    );
  if (first) index.startAt(h.firstSeq);
  else if (h.firstSeq !== index.nextSeq)
    throw new MamoriError(
      'JOURNAL_CORRUPT',
      `${path} starts at record ${h.firstSeq} where ${index.nextSeq} was due: a segment is missing`,
    );
  const segment = index.addSegment(path);
  let at = SEGMENT_HEADER_BYTES;
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  while (at + RECORD_HEADER_BYTES <= size) {
    await fh.read(header, 0, RECORD_HEADER_BYTES, at);
    const r = decodeRecordHeader(header);
    if ('invalid' in r || r.seq !== index.nextSeq) break;
    const n = payloadBytes(r);
    if (at + RECORD_HEADER_BYTES + n > size) break;
    if (n > 0) {
      const payload = Buffer.alloc(n);
      await fh.read(payload, 0, n, at + RECORD_HEADER_BYTES);
      if (!payloadMatches(r, payload)) break;
    }
    index.add({ ...r, segment, payloadAt: at + RECORD_HEADER_BYTES });
    at += RECORD_HEADER_BYTES + n;
  }
  return at;
}

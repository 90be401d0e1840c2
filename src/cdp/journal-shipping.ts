import type { Duplex } from 'node:stream';
import { MamoriError } from '../core/mamori-error.js';
import { ByteQueue } from '../nbd/byte-queue.js';
import { RECORD_HEADER_BYTES, decodeRecordHeader, payloadBytes, type JournalRecordHeader } from './journal-format.js';
import { JournalRecordReader } from './journal-records.js';
import type { WriteJournal } from './write-journal.js';

/*
 * Shipping a journal to the recovery site, over any byte stream (the site link's TLS in the
 * product). The receiving end speaks first: 8 bytes, the sequence number it needs next (what
 * it holds survives its restarts, so a new connection resumes where the journal there ends).
 * The sender then streams its durable records from there, as they lie in its segments, a run
 * at a time; the receiver checks each again (numbering, checksums), appends it keeping the
 * source's number and time, and answers with 8 bytes, the last sequence number on its stable
 * storage (once for all that one sync made durable). Those answers are the source's proof of
 * what the recovery site holds: its RPO, and what its local journal may drop.
 */

/** The HTTP Upgrade a journal stream crosses the site link under (api/journal-streams.ts serves it). */
export const JOURNAL_STREAM_PROTOCOL = 'mamori-journal';

/** Bytes of records read and sent at a time. */
const SEND_BATCH_BYTES = 4 * 1024 * 1024;
/** Record bytes the receiver holds unanswered before it stops reading. */
const MAX_UNACKED_BYTES = 64 * 1024 * 1024;

export interface ShipOptions {
  /** Each acknowledgment: every record up to `seq` is on the recovery site's stable storage. */
  onAck?: (seq: number) => void;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/**
 * Sends `journal`'s records to the receiver at the other end of `wire` until the wire closes
 * (resolves) or fails (rejects). Records are sent once durable here.
 */
export async function shipJournal(journal: WriteJournal, wire: Duplex, options: ShipOptions = {}): Promise<void> {
  const reader = new JournalRecordReader(journal.index);
  const input = new ByteQueue();
  let wanted: ((n: number) => void) | null = null;
  let closed = false;
  const gone = new Promise<void>((resolve) => {
    const end = (): void => {
      closed = true;
      resolve();
    };
    wire.once('close', end);
    wire.once('end', end);
  });
  wire.on('error', () => undefined); // reported as the close it causes
  wire.on('data', (chunk: Buffer) => {
    input.push(chunk);
    while (input.length >= 8) {
      const n = Number(input.take(8).readBigUInt64BE(0));
      if (wanted !== null) {
        const w = wanted;
        wanted = null;
        w(n);
      } else options.onAck?.(n);
    }
  });
  try {
    const start = await Promise.race([new Promise<number>((resolve) => (wanted = resolve)), gone.then(() => null)]);
    if (start === null) return;
    if (start < journal.index.firstSeq)
      throw new MamoriError(
        'JOURNAL_CORRUPT',
        `the recovery site needs record ${start}, which this journal no longer holds (it starts at ${journal.index.firstSeq}): resync the replica`,
      );
    if (start > journal.durableSeq + 1)
      throw new MamoriError(
        'JOURNAL_CORRUPT',
        `the recovery site holds records up to ${start - 1}, past this journal's last (${journal.durableSeq}): it is not this disk's journal`,
      );
    let next = start;
    while (!closed) {
      if (journal.failure !== null) throw journal.failure;
      if (next > journal.durableSeq) {
        await Promise.race([journal.durableAfter(next - 1), gone]);
        continue;
      }
      // A run of records in one write: one TLS record for many, not one each.
      const run = await reader.read(next, journal.durableSeq, SEND_BATCH_BYTES);
      if (closed) break;
      if (!wire.write(run.bytes)) await Promise.race([new Promise((resolve) => wire.once('drain', resolve)), gone]);
      next = run.headers.at(-1)!.seq + 1;
    }
  } finally {
    await reader.close();
  }
}

/**
 * The recovery site's end: tells the sender where `journal` ends, then appends what arrives and
 * acknowledges it once durable. Resolves when the sender closes; a record that does not check
 * (torn, renumbered, altered) ends the stream with JOURNAL_CORRUPT before it is appended.
 */
export async function receiveJournal(journal: WriteJournal, wire: Duplex): Promise<void> {
  const input = new ByteQueue();
  let unacked = 0;
  let paused = false;
  let failure: Error | null = null;
  let settled: Promise<unknown> = Promise.resolve();
  const done = new Promise<void>((resolve) => wire.once('close', () => resolve()));
  // One answer for what one sync made durable (appends resolve in order, a batch at a time),
  // not one per record: thousands of 8-byte TLS records a second cost the sender's CPU too.
  let ackSeq = -1;
  let ackQueued = false;
  const acknowledge = (seq: number): void => {
    ackSeq = Math.max(ackSeq, seq);
    if (ackQueued) return;
    ackQueued = true;
    setImmediate(() => {
      ackQueued = false;
      if (!wire.destroyed) wire.write(u64(ackSeq));
    });
  };
  const fail = (e: Error): void => {
    failure ??= e;
    wire.destroy();
  };
  wire.on('error', (e: Error) => (failure ??= e));
  wire.on('data', (chunk: Buffer) => {
    input.push(chunk);
    try {
      // Every whole record of what arrived, appended at once.
      const arrived: { header: JournalRecordHeader; payload: Buffer | null }[] = [];
      let bytes = 0;
      while (input.length >= RECORD_HEADER_BYTES) {
        const header = decodeRecordHeader(input.peek(RECORD_HEADER_BYTES));
        if ('invalid' in header)
          throw new MamoriError('JOURNAL_CORRUPT', `a shipped record does not check: ${header.invalid}`);
        const n = payloadBytes(header);
        if (input.length < RECORD_HEADER_BYTES + n) break;
        input.take(RECORD_HEADER_BYTES);
        arrived.push({ header, payload: n > 0 ? input.take(n) : null });
        bytes += RECORD_HEADER_BYTES + n;
      }
      if (arrived.length === 0) return;
      unacked += bytes;
      const appended = journal.appendReplicatedMany(arrived).then(
        (last) => {
          unacked -= bytes;
          if (paused && unacked < MAX_UNACKED_BYTES / 2) {
            paused = false;
            wire.resume();
          }
          if (last !== null) acknowledge(last.seq);
        },
        (e: unknown) => fail(e instanceof Error ? e : new Error(String(e))),
      );
      // Settled in order: what the stream waits for at its end, without a promise a record kept.
      settled = Promise.allSettled([settled, appended]);
      if (unacked > MAX_UNACKED_BYTES && !paused) {
        paused = true;
        wire.pause();
      }
    } catch (e) {
      fail(e instanceof Error ? e : new Error(String(e)));
    }
  });
  wire.write(u64(journal.durableSeq + 1));
  await done;
  await settled;
  // (set in the callbacks above, which the compiler does not follow)
  const err = failure as Error | null;
  if (err !== null && isJournalError(err)) throw err;
}

function isJournalError(e: Error): boolean {
  return e instanceof MamoriError && (e.code === 'JOURNAL_CORRUPT' || e.code === 'JOURNAL_WRITE_FAILED');
}

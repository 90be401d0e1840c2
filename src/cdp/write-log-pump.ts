import type { JournalWrite, WriteJournal } from './write-journal.js';
import type { WriteLogReader } from './write-log-format.js';
import type { WriteLogCheckpoint } from './qemu-write-log.js';

/*
 * Moves whole prefixes of QEMU's write log (cdp/qemu-write-log.ts) into the VM's write journal,
 * behind the guest: each write as a write record, each discard as a zero record (the source
 * reads zeros there). Shipping takes the journal from there (cdp/journal-shipping.ts). The log's
 * own flush entries are the prefixes' markers, not the guest's: they carry nothing.
 *
 * The log does not say when a write happened, only that it did before the flush that made its
 * prefix whole. A checkpoint's batch is stamped with the checkpoint's instant; a batch pumped
 * ahead of the next checkpoint (to spread the work over the interval, so that little is left
 * to do when the checkpoint comes) carries the time of the journal's last record, the
 * checkpoint it follows. Only checkpoints' times are looked up (a point in time T finds the
 * last checkpoint at or before T with all it holds), and a group's checkpoints must keep one
 * instant, which an ahead batch stamped later could push past.
 */

/** Write data queued into the journal before the pump waits for it. */
const PUMP_BYTES_IN_FLIGHT = 16 * 1024 * 1024;
/** Records, or bytes of data, appended at once. */
const BATCH_RECORDS = 256;
const BATCH_BYTES = 1024 * 1024;

/** Entries up to `entries` (a whole prefix) into the journal, without a checkpoint. Returns how many records went in. */
export async function pumpWriteLogAhead(
  reader: WriteLogReader,
  journal: WriteJournal,
  entries: number,
): Promise<number> {
  return pumpEntries(reader, journal, entries, journal.lastTimeUs);
}

/**
 * A checkpoint's whole prefix into the journal, then the checkpoint itself at its instant.
 * Returns how many records went in (not counting the checkpoint) and the checkpoint's number.
 */
export async function pumpWriteLog(
  reader: WriteLogReader,
  journal: WriteJournal,
  checkpoint: WriteLogCheckpoint,
  /** The checkpoint record's flags (application-consistent, for one). */
  flags = 0,
): Promise<{ records: number; checkpointSeq: number }> {
  // Never before the journal's last record: a clock step back on the host must not reorder it.
  const timeUs = Math.max(checkpoint.at.getTime() * 1000, journal.lastTimeUs);
  const records = await pumpEntries(reader, journal, checkpoint.entries, timeUs);
  return { records, checkpointSeq: (await journal.appendCheckpoint(flags, timeUs)).seq };
}

async function pumpEntries(
  reader: WriteLogReader,
  journal: WriteJournal,
  entries: number,
  timeUs: number,
): Promise<number> {
  const failed: { error: Error | null } = { error: null };
  let pending: Promise<void>[] = [];
  let pendingBytes = 0;
  let records = 0;
  let batch: JournalWrite[] = [];
  let batchBytes = 0;
  // Records go in batches (one promise each, the log's buffers as they are), queued in call
  // order, which is the journal's order; a backlog is held to a bound in memory by waiting.
  const flush = (): void => {
    if (batch.length === 0) return;
    pending.push(
      journal.appendMany(batch, timeUs).then(
        () => undefined,
        (e: unknown) => void (failed.error ??= e instanceof Error ? e : new Error(String(e))),
      ),
    );
    records += batch.length;
    pendingBytes += batchBytes;
    batch = [];
    batchBytes = 0;
  };
  for await (const e of reader.readTo(entries)) {
    if (e.kind === 'write') {
      batch.push({ kind: 'write', offset: e.offset, data: e.data });
      batchBytes += e.data.length;
    } else if (e.kind === 'discard') batch.push({ kind: 'zero', offset: e.offset, length: e.length });
    if (batch.length >= BATCH_RECORDS || batchBytes >= BATCH_BYTES) flush();
    if (pendingBytes >= PUMP_BYTES_IN_FLIGHT) {
      await Promise.all(pending);
      pending = [];
      pendingBytes = 0;
    }
    if (failed.error !== null) throw failed.error;
  }
  flush();
  await Promise.all(pending);
  if (failed.error !== null) throw failed.error;
  return records;
}

import type { WriteJournal } from './write-journal.js';
import type { WriteLogReader } from './write-log-format.js';
import type { WriteLogCheckpoint } from './qemu-write-log.js';

/**
 * Moves a checkpoint's whole prefix of QEMU's write log (cdp/qemu-write-log.ts) into the VM's
 * write journal, behind the guest: each write as a write record, each discard as a zero record
 * (the source reads zeros there), then the checkpoint itself at its instant. Shipping takes the
 * journal from there (cdp/journal-shipping.ts). The log's own flush entries are checkpoints'
 * markers, not the guest's: they carry nothing.
 *
 * Every record of the batch is stamped with the checkpoint's instant: the log does not say when
 * a write happened, only that it did before the checkpoint. Journal time therefore moves in
 * checkpoint steps, and a point in time T finds the last checkpoint at or before T with all it
 * holds. Returns how many records went in (not counting the checkpoint).
 */
/** Write data queued into the journal before the pump waits for it. */
const PUMP_BYTES_IN_FLIGHT = 16 * 1024 * 1024;

export async function pumpWriteLog(
  reader: WriteLogReader,
  journal: WriteJournal,
  checkpoint: WriteLogCheckpoint,
  /** The checkpoint record's flags (application-consistent, for one). */
  flags = 0,
): Promise<{ records: number; checkpointSeq: number }> {
  // Never before the journal's last record: a clock step back on the host must not reorder it.
  const timeUs = Math.max(checkpoint.at.getTime() * 1000, journal.lastTimeUs);
  const failed: { error: Error | null } = { error: null };
  let pending: Promise<void>[] = [];
  let pendingBytes = 0;
  let records = 0;
  const track = (p: Promise<unknown>, bytes: number): void => {
    pending.push(
      p.then(
        () => undefined,
        (e: unknown) => void (failed.error ??= e instanceof Error ? e : new Error(String(e))),
      ),
    );
    pendingBytes += bytes;
    records += 1;
  };
  for await (const e of reader.readTo(checkpoint.entries)) {
    // Appends are queued in call order, which is the journal's order; a backlog is held to a
    // bound in memory by waiting for what is queued.
    if (e.kind === 'write') track(journal.appendWrite(e.offset, e.data, timeUs), e.data.length);
    else if (e.kind === 'discard') track(journal.appendZero(e.offset, e.length, timeUs), 0);
    if (pendingBytes >= PUMP_BYTES_IN_FLIGHT) {
      await Promise.all(pending);
      pending = [];
      pendingBytes = 0;
    }
    if (failed.error !== null) throw failed.error;
  }
  const cp = journal.appendCheckpoint(flags, timeUs);
  cp.catch(() => undefined); // awaited below, after the writes it follows
  await Promise.all(pending);
  if (failed.error !== null) throw failed.error;
  return { records, checkpointSeq: (await cp).seq };
}

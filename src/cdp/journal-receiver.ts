import type { NbdExportBackend, NbdWriteFlags } from '../nbd/nbd-server.js';
import { NbdBackendError } from '../nbd/nbd-server.js';
import type { WriteJournal } from './write-journal.js';

/**
 * The NBD export a write-blocking mirror of one disk writes into: each write becomes a journal
 * record, appended in the order the mirror sent them, and is answered once it is on stable
 * storage. The guest's write completes only then, so a record the journal lost was never
 * complete for the guest either. Write zeroes and trims become zero records (a trimmed range
 * may read as anything; zeros are what the source reads there). Nothing reads this export:
 * the mirror only writes.
 */
export class JournalReceiver implements NbdExportBackend {
  readonly size: number;
  readonly #journal: WriteJournal;

  constructor(journal: WriteJournal, sizeBytes: number) {
    this.#journal = journal;
    this.size = sizeBytes;
  }

  read(): Promise<Buffer> {
    return Promise.reject(new NbdBackendError('EINVAL', 'a journal receiver is written, not read'));
  }

  async write(offset: number, data: Buffer, _flags: NbdWriteFlags): Promise<void> {
    await this.#journal.appendWrite(offset, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.#journal.appendZero(offset, length);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.#journal.appendZero(offset, length);
  }

  /** Every write is durable when it is answered: nothing is left to flush. */
  flush(): Promise<void> {
    return Promise.resolve();
  }
}

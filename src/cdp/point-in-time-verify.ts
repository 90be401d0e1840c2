import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { verifyWriteLog, type WriteLogReport } from '../guest/writelog-verifier.js';
import { convertToRaw } from '../qemu/qemu-img-write.js';
import type { JournalIndex } from './journal-index.js';
import { JournalPointServer } from './journal-point-server.js';

/**
 * The write-log verifier on one disk of a continuous replica as it was at a point in time: the
 * disk is served at the newest checkpoint every disk holds at or before `timeUs` (as a recovery
 * at that time would boot it), read whole through NBD and checked record by record. The ground
 * truth of any-point recovery, without booting a VM.
 */
export async function verifyAtPointInTime(o: {
  /** The journal base point's file of the disk. */
  baseFile: string;
  /** Every disk's journal: the instant must be one all of them hold. */
  journals: ReadonlyMap<number, JournalIndex>;
  disk: number;
  timeUs: number;
}): Promise<{ timeUs: number; report: WriteLogReport }> {
  const journal = o.journals.get(o.disk);
  if (journal === undefined) throw new MamoriError('NOT_FOUND', `the journal has no disk ${o.disk}`);
  // A folder of its own under the system's temporary folder: unix socket paths must stay short.
  const dir = await mkdtemp(join(tmpdir(), 'mamori-pit-'));
  try {
    const server = await JournalPointServer.start({
      dir,
      disks: [{ index: o.disk, baseFile: o.baseFile, journal }],
      timeUs: o.timeUs,
      instantOf: [...o.journals.values()],
    });
    try {
      const raw = join(dir, 'disk.raw');
      await convertToRaw(
        `nbd+unix:///${JournalPointServer.exportName(o.disk)}?socket=${server.socketPath}`,
        'raw',
        raw,
      );
      const report = await verifyWriteLog(raw);
      return {
        timeUs: server.timeUs,
        report: { ...report, image: `${o.baseFile} + journal to ${iso(server.timeUs)}` },
      };
    } finally {
      await server.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function iso(us: number): string {
  return new Date(us / 1000).toISOString();
}

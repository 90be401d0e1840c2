import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { syncDirectory } from '../core/durable-sync.js';
import { NbdClient } from '../nbd/nbd-client.js';
import { createQcow2 } from '../qemu/qemu-img-write.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import type { JournalIndex } from './journal-index.js';
import { PointInTimeExport } from './point-in-time-export.js';

/*
 * A point in time of a continuous replica as an image a recovery can stand on: a qcow2 layer
 * over the journal's base point holding what the journal supplies up to one checkpoint, and
 * nothing else. The recovered VM's overlay goes above it as above any replica point, so a plan
 * run or a failover at a point in time takes the path a point takes. The copy is the journal's
 * writes since the base, not the disk: its cost follows what the guest wrote in the window.
 *
 * Written beside its final name and renamed once whole and synced: a crash leaves either the
 * whole layer or a `.part` the next attempt replaces.
 */

/** Bytes read from the journal and written at a time. */
const CHUNK_BYTES = 4 * 1024 * 1024;

export async function materializePointInTime(o: {
  /** The base point's qcow2 file of the disk (the new layer's backing). */
  baseFile: string;
  journal: JournalIndex;
  checkpointSeq: number;
  /** The layer to make; kept if already there (a retried recovery). */
  out: string;
  /** A private folder for the daemon's sockets (short: unix socket paths are). */
  runDir: string;
}): Promise<{ bytes: number }> {
  if (await exists(o.out)) return { bytes: 0 };
  await mkdir(dirname(o.out), { recursive: true, mode: 0o700 });
  const part = `${o.out}.part`;
  await rm(part, { force: true });
  await createQcow2(part, { backing: { file: o.baseFile, format: 'qcow2' } });
  const view = new PointInTimeExport(o.journal, o.checkpointSeq, {
    size: Number.MAX_SAFE_INTEGER,
    // Only the journal's ranges are read: the base is never asked for.
    read: () => Promise.reject(new Error('the base is not read when a point in time is copied')),
  });
  await mkdir(o.runDir, { recursive: true, mode: 0o700 });
  const socket = join(o.runDir, 'nbd.sock');
  const daemon = await StorageDaemon.start({
    qmpSocket: join(o.runDir, 'qmp.sock'),
    pidFile: join(o.runDir, 'daemon.pid'),
    chains: [{ id: 'pit', layers: [{ file: part, format: 'qcow2' }] }],
    nbd: { listen: { type: 'unix', path: socket } },
    exports: [{ id: 'pit', node: 'pit', writable: true }],
  });
  let bytes = 0;
  try {
    const client = await NbdClient.connect({ socketPath: socket }, { exportName: 'pit' });
    try {
      for (const r of view.journalRanges()) {
        for (let at = r.offset; at < r.offset + r.length; at += CHUNK_BYTES) {
          const n = Math.min(CHUNK_BYTES, r.offset + r.length - at);
          await client.write(at, await view.read(at, n));
          bytes += n;
        }
      }
      await client.flush();
    } finally {
      await client.disconnect().catch(() => undefined);
    }
  } finally {
    await view.close();
    await daemon.stop();
    await rm(o.runDir, { recursive: true, force: true });
  }
  await rename(part, o.out);
  await syncDirectory(dirname(o.out));
  return { bytes };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    (e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? false : Promise.reject(e)),
  );
}

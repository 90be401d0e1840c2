import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import { NbdClient } from '../nbd/nbd-client.js';
import type { DiskRecord } from '../disks/disk-record.js';

/**
 * A new pool image opened for writing through QEMU's own block layer: a qemu-storage-daemon
 * exports it on a private unix socket in runDir, and `write` gets an NBD client to it. The
 * daemon quits (closing the image cleanly, qcow2 metadata written) and runDir goes before
 * this returns, so the disk can be registered right after. Every conversion source (an NBD
 * server, a P2V agent) writes its copy through here.
 */
export async function withTargetDiskExport<T>(
  disk: DiskRecord,
  runDir: string,
  write: (target: NbdClient) => Promise<T>,
): Promise<T> {
  await mkdir(runDir, { recursive: true });
  const where = { qmpSocket: join(runDir, 'qmp.sock'), pidFile: join(runDir, 'qemu-storage-daemon.pid') };
  const socketPath = join(runDir, 'nbd.sock');
  // A site that died mid-copy left this conversion's daemon running: it goes first.
  await StorageDaemon.killLeftover(where);
  const daemon = await StorageDaemon.start({
    ...where,
    chains: [{ id: 'target', layers: [{ file: disk.path, format: disk.format }] }],
    nbd: { listen: { type: 'unix', path: socketPath } },
    exports: [{ id: 'target', node: 'target', writable: true }],
  });
  let target: NbdClient | null = null;
  try {
    target = await NbdClient.connect({ socketPath }, { exportName: 'target' });
    return await write(target);
  } finally {
    await target?.disconnect().catch(() => undefined);
    await daemon.stop().catch(() => undefined);
    await rm(runDir, { recursive: true, force: true });
  }
}

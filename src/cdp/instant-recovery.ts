import { MamoriError } from '../core/mamori-error.js';
import { createQcow2 } from '../qemu/qemu-img-write.js';
import type { QmpClient } from '../qemu/qmp-client.js';

/*
 * Instant recovery: a VM recovered at a point in time boots at once from the journal's
 * export of that instant (point-in-time-export.ts over nbd-server.ts), read-only, with a local
 * qcow2 overlay above it taking the VM's writes. Nothing is copied first, so the time to boot
 * does not depend on the disk's size. While it runs, block-stream copies what the overlay
 * lacks from the export into it; once done, the overlay stands alone and the export's node
 * goes: the VM lives on local storage as any other.
 */

export interface ExportBackedDisk {
  /** The guest's node (the overlay), e.g. `disk0`. */
  node: string;
  /** The NBD node under it. */
  exportNode: string;
  /** The `-blockdev` objects, bottom first: the export, the overlay's file, the overlay. */
  blockdevs: Record<string, unknown>[];
}

/**
 * Makes the overlay file (no backing in its header: the export is given as its backing node
 * when opened) and returns the nodes for a VM's command line.
 */
export async function exportBackedDisk(o: {
  node: string;
  overlay: string;
  sizeBytes: number;
  socketPath: string;
  exportName: string;
}): Promise<ExportBackedDisk> {
  // Not the site's usual layout (128 KiB clusters with extended L2): QEMU 7.2 aborts in
  // block-stream's copy-on-read (block/io.c:1388, `skip_bytes < pnum`) on such an overlay once
  // the guest has written part of a cluster, whatever the backing (NBD or a qcow2 file).
  // Plain 128 KiB clusters and 64 KiB ones with extended L2 stream fine (measured on 7.2).
  await createQcow2(o.overlay, { sizeBytes: o.sizeBytes, layout: 'replica' });
  const exportNode = `${o.node}-pit`;
  return {
    node: o.node,
    exportNode,
    blockdevs: [
      {
        driver: 'nbd',
        'node-name': exportNode,
        server: { type: 'unix', path: o.socketPath },
        export: o.exportName,
        'read-only': true,
      },
      { driver: 'file', filename: o.overlay, 'node-name': `${o.node}-file` },
      { driver: 'qcow2', file: `${o.node}-file`, backing: exportNode, 'node-name': o.node },
    ],
  };
}

/**
 * Copies everything the overlay does not hold from the export into it (block-stream, while
 * the guest runs), then removes the export's node: from then on the VM needs nothing of the
 * journal. Resolves when the export is no longer open.
 */
export async function moveOffExport(
  qmp: QmpClient,
  disk: Pick<ExportBackedDisk, 'node' | 'exportNode'>,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const jobId = `${disk.node}-stream`;
  const done = qmp.waitForEvent('BLOCK_JOB_COMPLETED', {
    timeoutMs: options.timeoutMs ?? 6 * 3600_000,
    predicate: (ev) => ev.data.device === jobId,
  });
  await qmp.execute('block-stream', { 'job-id': jobId, device: disk.node });
  const ev = await done;
  if (ev.data.error !== undefined)
    throw new MamoriError('QMP_ERROR', `copying ${disk.node} off its point-in-time export failed: ${ev.data.error}`, {
      details: { node: disk.node },
    });
  await qmp.execute('blockdev-del', { 'node-name': disk.exportNode });
}

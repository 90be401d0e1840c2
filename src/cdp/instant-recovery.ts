import { MamoriError } from '../core/mamori-error.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { QmpBlockInfo } from '../qemu/qmp-types.js';

/*
 * Instant recovery, in the VM: a VM recovered at a point in time boots at once from the
 * journal's export of that instant (journal-point-server.ts), read-only, under a local qcow2
 * overlay whose header names the export as its backing (point-in-time-exports.ts). Nothing is
 * copied first, so the time to boot does not depend on the disk's size. While it runs,
 * block-stream copies what the overlay lacks from the export into it; once done, QEMU drops the
 * backing from the live chain and from the header: the VM lives on local storage as any other,
 * and the export can close.
 *
 * The overlay is not in the site's layout: QEMU 7.2 aborts in block-stream's copy-on-read
 * (block/io.c:1388, `skip_bytes < pnum`) on a qcow2 of 128 KiB clusters with extended L2 once
 * the guest has written part of a cluster, whatever the backing. Plain 128 KiB clusters
 * (`replica`) and 64 KiB ones with extended L2 stream fine (measured on 7.2).
 */

/** The block job moving `node` off its export. */
export function streamJobId(node: string): string {
  return `${node}-stream`;
}

/**
 * Whether the image at `path`, somewhere in the VM's live chains, still reads through a backing
 * (its export); false once it stands alone, or when the VM does not have it open.
 */
export function readsThroughBacking(blocks: QmpBlockInfo[], path: string): boolean {
  for (const b of blocks) {
    let image = b.inserted?.image as ImageNode | undefined;
    for (; image !== undefined; image = image['backing-image']) {
      if (image.filename === path) return image['backing-image'] !== undefined;
    }
  }
  return false;
}

interface ImageNode {
  filename: string;
  'backing-image'?: ImageNode;
}

/**
 * Starts copying everything `node` lacks from its backing into it (block-stream, while the guest
 * runs) unless that job runs already; true when it started one. QEMU ends the job on its own.
 */
export async function startMoveOffExport(qmp: QmpClient, node: string): Promise<boolean> {
  const jobs = await qmp.execute('query-block-jobs', undefined, { timeoutMs: 10_000 });
  if (jobs.some((j) => j.device === streamJobId(node))) return false;
  await qmp.execute('block-stream', { 'job-id': streamJobId(node), device: node }, { timeoutMs: 10_000 });
  return true;
}

/** startMoveOffExport, then waits for the job to end: resolves once `node` stands alone. */
export async function moveOffExport(qmp: QmpClient, node: string, options: { timeoutMs?: number } = {}): Promise<void> {
  const done = qmp.waitForEvent('BLOCK_JOB_COMPLETED', {
    timeoutMs: options.timeoutMs ?? 6 * 3600_000,
    predicate: (ev) => ev.data.device === streamJobId(node),
  });
  await startMoveOffExport(qmp, node);
  const ev = await done;
  if (ev.data.error !== undefined)
    throw new MamoriError('QMP_ERROR', `copying ${node} off its point-in-time export failed: ${ev.data.error}`, {
      details: { node },
    });
}

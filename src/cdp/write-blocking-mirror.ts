import { MamoriError } from '../core/mamori-error.js';
import type { QmpClient } from '../qemu/qmp-client.js';

/**
 * Continuous replication's tap on a running VM's disk: QEMU's `blockdev-mirror` with `sync:
 * none` (nothing is copied in the background: the replica already holds the disk) and
 * `copy-mode: write-blocking` onto an NBD export of the journal receiver. Once the job is
 * ready, each guest write goes to the receiver, in order, before the guest sees it complete
 * (notes: QEMU 7.2's active mirror; test/integration/nbd/nbd-server-qemu.test.ts).
 */
export interface WriteBlockingMirror {
  /** The block job's id, also the name of the NBD node it writes to. */
  jobId: string;
  device: string;
}

export async function startWriteBlockingMirror(
  qmp: QmpClient,
  o: { device: string; jobId: string; socketPath: string; exportName: string; readyTimeoutMs?: number },
): Promise<WriteBlockingMirror> {
  await qmp.execute('blockdev-add', {
    driver: 'nbd',
    'node-name': o.jobId,
    server: { type: 'unix', path: o.socketPath },
    export: o.exportName,
  });
  try {
    await mirrorOnto(qmp, { device: o.device, jobId: o.jobId, target: o.jobId, readyTimeoutMs: o.readyTimeoutMs });
    return { jobId: o.jobId, device: o.device };
  } catch (e) {
    await stopWriteBlockingMirror(qmp, { jobId: o.jobId, device: o.device }).catch(() => undefined);
    throw e;
  }
}

/**
 * The write-blocking mirror of `device` onto the node `target`, `sync: none`, once it is ready
 * (from then on every guest write reaches the target before the guest sees it complete).
 */
export async function mirrorOnto(
  qmp: QmpClient,
  o: { device: string; jobId: string; target: string; readyTimeoutMs?: number },
): Promise<void> {
  await qmp.execute('blockdev-mirror', {
    'job-id': o.jobId,
    device: o.device,
    target: o.target,
    sync: 'none',
    'copy-mode': 'write-blocking',
  });
  const deadline = Date.now() + (o.readyTimeoutMs ?? 30_000);
  for (;;) {
    const jobs = (await qmp.execute('query-block-jobs')) as { device: string; ready: boolean; status: string }[];
    const job = jobs.find((j) => j.device === o.jobId);
    if (job?.ready === true) return;
    if (job === undefined || Date.now() > deadline)
      throw new MamoriError(
        'QMP_ERROR',
        `the write-blocking mirror of ${o.device} ${job === undefined ? 'ended' : 'was not ready in time'} (${job?.status ?? 'gone'})`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Cancels the mirror job `jobId` if it runs and waits until it is gone. */
export async function cancelMirror(qmp: QmpClient, jobId: string): Promise<void> {
  const jobs = (await qmp.execute('query-block-jobs')) as { device: string }[];
  if (!jobs.some((j) => j.device === jobId)) return;
  const ended = qmp.waitForEvent('BLOCK_JOB_CANCELLED', {
    timeoutMs: 30_000,
    predicate: (ev) => ev.data?.['device'] === jobId,
  });
  await qmp.execute('block-job-cancel', { device: jobId, force: true });
  await ended;
}

/** Ends the mirror (the guest's writes go to its disk alone again) and drops its NBD node. */
export async function stopWriteBlockingMirror(qmp: QmpClient, m: WriteBlockingMirror): Promise<void> {
  await cancelMirror(qmp, m.jobId);
  await qmp.execute('blockdev-del', { 'node-name': m.jobId });
}

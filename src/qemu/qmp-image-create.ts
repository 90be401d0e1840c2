import { MamoriError } from '../core/mamori-error.js';
import type { QmpClient } from './qmp-client.js';
import type { QmpBlockdevOptions } from './qmp-types.js';
import type { BackingRef } from './qemu-img-write.js';

/**
 * A new qcow2 overlay made by a running QEMU process (blockdev-create over QMP) instead of
 * `qemu-img create`: a daemon that already runs makes one in a few milliseconds, where a
 * process start costs tens to hundreds on a loaded host. The layout is the site's (128 KiB
 * clusters, extended L2: qcow2-layouts.ts) or QEMU's default (a fleecing scratch image), and
 * the header names its backing as given (relative to the overlay), with its format pinned, as
 * qemu-img would write it; or none (the backing is given when the node is opened).
 *
 * Leaves the new file's protocol node open as `fileNode` (writable), so the caller opens the
 * qcow2 node on it; on failure the node is closed again (the file may stay: the caller
 * owns its name and removes it). `directIo` opens it with O_DIRECT (cache.direct): QEMU
 * refuses that where the filesystem has no O_DIRECT, and the caller may try again without.
 */
export async function createQcow2OverQmp(
  qmp: QmpClient,
  o: {
    file: string;
    fileNode: string;
    sizeBytes: number;
    backing: BackingRef | null;
    jobId: string;
    layout?: 'site' | 'qemu-default';
    directIo?: boolean;
    timeoutMs?: number;
  },
): Promise<void> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  await runCreateJob(qmp, `${o.jobId}f`, { driver: 'file', filename: o.file, size: 0 }, timeoutMs);
  await qmp.execute(
    'blockdev-add',
    {
      driver: 'file',
      filename: o.file,
      'node-name': o.fileNode,
      ...(o.directIo === true ? { cache: { direct: true } } : {}),
    },
    { timeoutMs },
  );
  try {
    await runCreateJob(
      qmp,
      `${o.jobId}q`,
      {
        driver: 'qcow2',
        file: o.fileNode,
        size: o.sizeBytes,
        ...(o.backing === null ? {} : { 'backing-file': o.backing.file, 'backing-fmt': o.backing.format }),
        ...(o.layout === 'qemu-default' ? {} : { 'cluster-size': 131072, 'extended-l2': true }),
      },
      timeoutMs,
    );
  } catch (e) {
    await qmp.execute('blockdev-del', { 'node-name': o.fileNode }, { timeoutMs }).catch(() => undefined);
    throw e;
  }
}

/** blockdev-create runs as a job: wait for it to conclude, read its error, dismiss it. */
async function runCreateJob(qmp: QmpClient, id: string, options: QmpBlockdevOptions, timeoutMs: number): Promise<void> {
  const concluded = qmp.waitForEvent('JOB_STATUS_CHANGE', {
    timeoutMs,
    predicate: (ev) => ev.data.id === id && ev.data.status === 'concluded',
  });
  concluded.catch(() => undefined);
  await qmp.execute('blockdev-create', { 'job-id': id, options }, { timeoutMs });
  await concluded;
  const jobs = await qmp.execute('query-jobs', undefined, { timeoutMs });
  const error = jobs.find((j) => j.id === id)?.error;
  await qmp.execute('job-dismiss', { id }, { timeoutMs });
  if (error !== undefined)
    throw new MamoriError('QMP_ERROR', `QEMU could not create the image (${id}): ${error}`, {
      details: { job: id, options },
    });
}

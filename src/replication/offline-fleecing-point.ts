import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import type { DaemonLayer } from '../qemu/daemon-chain.js';
import type { PointConsistency } from './replica-chain.js';
import {
  DEFAULT_GRANULARITY,
  bitmapName,
  editImageBitmap,
  inspectImageBitmaps,
  readImageBitmaps,
  type BitmapMode,
  type ResyncReason,
} from './dirty-bitmaps.js';
import { DEFAULT_PREFIX } from './fleecing-machinery.js';

// A stopped VM: its images are the point; bitmaps with qemu-img, export by a storage daemon.
// (A running VM's point is fleecing-point.ts.)

export interface OfflineDisk {
  /** Names the export and nodes, e.g. `disk0`. */
  id: string;
  /** The disk's chain, bottom to top (image, then snapshot overlays); bitmaps live on the top. */
  layers: DaemonLayer[];
}

export interface CreateOfflineFleecingPointOptions {
  disks: OfflineDisk[];
  /** Holds the daemon's QMP socket, pid file and NBD socket. */
  runDir: string;
  previousGeneration: number | null;
  granularity?: number;
  prefix?: string;
  /** A cleanly shut down guest gives an application-consistent image; the caller knows (default 'crash'). */
  consistency?: PointConsistency;
}

export interface OfflineFleecedDisk {
  id: string;
  topFile: string;
  format: 'qcow2' | 'raw';
  mode: BitmapMode;
  resyncReason: ResyncReason | null;
  exportName: string;
  /** Added to the image for the VM's next run; null for raw images (they hold no bitmaps). */
  bitmap: string | null;
  persistent: boolean;
  previousBitmap: string | null;
  metaContext: string | null;
}

export interface OfflineFleecingPoint {
  kind: 'offline';
  generation: number;
  previousGeneration: number | null;
  at: string;
  consistency: PointConsistency;
  nbdSocket: string;
  qmpSocket: string;
  pidFile: string;
  full: boolean;
  needsResync: boolean;
  disks: OfflineFleecedDisk[];
}

/**
 * The images of a stopped VM, exported read-only with the previous bitmap (as `qemu-nbd -r -B`
 * would, one socket for all disks). The daemon holds the images, so the VM cannot start
 * (image locking) until the point is completed or aborted.
 */
export async function createOfflineFleecingPoint(
  opts: CreateOfflineFleecingPointOptions,
): Promise<OfflineFleecingPoint> {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const generation = (opts.previousGeneration ?? 0) + 1;
  const disks: OfflineFleecedDisk[] = [];
  for (const d of opts.disks) {
    const top = d.layers.at(-1);
    if (top === undefined)
      throw new MamoriError('INVALID_INPUT', `disk ${d.id} has no image`, { details: { disk: d.id } });
    const verdict = await inspectImageBitmaps(top.file, top.format, opts.previousGeneration);
    for (const name of verdict.stale) await editImageBitmap(top.file, name, [{ op: 'remove' }]);
    const qcow2 = top.format === 'qcow2';
    const bitmap = qcow2 ? bitmapName(generation) : null;
    if (bitmap !== null)
      await editImageBitmap(top.file, bitmap, [{ op: 'add', granularity: opts.granularity ?? DEFAULT_GRANULARITY }]);
    const previousBitmap = verdict.mode === 'incremental' ? verdict.previous!.name : null;
    disks.push({
      id: d.id,
      topFile: top.file,
      format: top.format,
      mode: verdict.mode,
      resyncReason: verdict.reason,
      exportName: `${prefix}-${d.id}`,
      bitmap,
      persistent: qcow2,
      previousBitmap,
      metaContext: previousBitmap === null ? null : `qemu:dirty-bitmap:${previousBitmap}`,
    });
  }
  const point: OfflineFleecingPoint = {
    kind: 'offline',
    generation,
    previousGeneration: opts.previousGeneration,
    at: new Date().toISOString(),
    consistency: opts.consistency ?? 'crash',
    ...offlineDaemonFiles(opts.runDir, prefix),
    full: disks.every((d) => d.mode === 'full'),
    needsResync: disks.some((d) => d.mode === 'resync'),
    disks,
  };
  try {
    const daemon = await StorageDaemon.start({
      qmpSocket: point.qmpSocket,
      pidFile: point.pidFile,
      chains: opts.disks.map((d, i) => ({ id: disks[i]!.exportName, layers: d.layers, readOnly: true })),
      nbd: { listen: { type: 'unix', path: point.nbdSocket } },
      exports: disks.map((d) => ({
        id: d.exportName,
        node: d.exportName,
        ...(d.previousBitmap === null ? {} : { bitmaps: [d.previousBitmap] }),
      })),
    });
    await daemon.qmp().close();
    return point;
  } catch (e) {
    await offlineTeardown(point, 'abort').catch(() => undefined);
    throw e;
  }
}

/** After a server died while exporting a stopped VM's images: the daemon holding them goes. */
export async function sweepOfflineFleecingLeftovers(runDir: string, prefix = DEFAULT_PREFIX): Promise<void> {
  const files = offlineDaemonFiles(runDir, prefix);
  await StorageDaemon.killLeftover(files);
  await rm(files.nbdSocket, { force: true });
}

/** Where a stopped VM's export daemon keeps its sockets and pid: fixed per VM, so a restart finds a leftover. */
function offlineDaemonFiles(runDir: string, prefix: string): { nbdSocket: string; qmpSocket: string; pidFile: string } {
  return {
    nbdSocket: join(runDir, `${prefix}.nbd.sock`),
    qmpSocket: join(runDir, `${prefix}.qmp.sock`),
    pidFile: join(runDir, `${prefix}.pid`),
  };
}

export async function completeOfflineFleecingPoint(point: OfflineFleecingPoint): Promise<void> {
  await offlineTeardown(point, 'complete');
}

export async function abortOfflineFleecingPoint(point: OfflineFleecingPoint): Promise<void> {
  await offlineTeardown(point, 'abort');
}

async function offlineTeardown(point: OfflineFleecingPoint, outcome: 'complete' | 'abort'): Promise<void> {
  try {
    const daemon = await StorageDaemon.attach({ qmpSocket: point.qmpSocket, pidFile: point.pidFile });
    await daemon.stop();
  } catch (e) {
    if (!(isMamoriError(e, 'QMP_DISCONNECTED') && e.details?.['wanted'] === 'STORAGE_DAEMON_NOT_RUNNING')) throw e;
  }
  await rm(point.nbdSocket, { force: true });
  for (const d of point.disks) {
    if (d.format !== 'qcow2') continue;
    const drop = outcome === 'complete' ? d.previousBitmap : d.bitmap;
    if (drop === null) continue;
    if ((await readImageBitmaps(d.topFile)).some((b) => b.name === drop))
      await editImageBitmap(d.topFile, drop, [{ op: 'remove' }]);
  }
}

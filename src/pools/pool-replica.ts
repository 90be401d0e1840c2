import { chmod, link, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { snapshotOverlayIndex } from '../vms/vm-snapshots.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { measureQcow2, queryImageInfo } from '../qemu/qemu-img-read.js';
import { flattenToQcow2 } from '../qemu/qemu-img-write.js';
import { syncDirectory, syncFile } from '../core/durable-sync.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * A pool's replica (View Composer's): the master's snapshot as one read-only qcow2 per master
 * disk, in one storage pool. Every desktop's OS disk there is an overlay on it, so the
 * snapshot's bytes are stored once per storage pool, however many desktops.
 *
 * When the snapshot's layer is already one whole qcow2 (no backing file, no external data
 * file) on the same filesystem, the replica is a second name for it (a hard link) and costs no
 * space: the layer is immutable while the snapshot exists, and deleting the snapshot gives the
 * master a copy of its own before writing (disks/shared-layer.ts), as Proxmox's linked clones
 * read their template's base image itself. Otherwise the layers are flattened into a copy.
 */
export interface ReplicaLayer {
  path: string;
  format: string;
}

/**
 * Runs `fn` while the master holds still (no start, no snapshot delete can begin or be under
 * way), with its layers for the snapshot read again (null: the snapshot is gone) and whether
 * it is off. Only an off master's layers are linked: a running QEMU may hold a layer open
 * writable (the top it had before a live snapshot) and with it a write lock that would keep
 * every desktop from starting. Started later, it opens them read-only (qemu/vm-argv.ts).
 */
export type HeldLayers = <T>(
  fn: (held: { layers: ReplicaLayer[] | null; masterOff: boolean }) => Promise<T>,
) => Promise<T>;

/** The image holding disk `d` as it was at `snapshot` (with its backing chain): the layer below the snapshot's overlay. */
export function snapshotLayer(d: DiskRecord, snapshot: string): ReplicaLayer {
  const i = snapshotOverlayIndex(d, snapshot);
  if (i < 0)
    throw new MamoriError(
      'INVALID_INPUT',
      `disk ${d.name} has no layer for snapshot ${snapshot}: it was attached after the snapshot was taken`,
      { details: { disk: d.name, snapshot } },
    );
  return i === 0 ? { path: d.path, format: d.format } : { path: d.overlays[i - 1]!, format: 'qcow2' };
}

/** Bytes the flattened copy of each layer will take (qemu-img measure: allocated data plus qcow2 metadata). */
export async function measureReplica(layers: ReplicaLayer[]): Promise<number> {
  let total = 0;
  for (const l of layers) {
    // The replica layout: written once, only read after (qemu/qcow2-layouts.ts).
    total += (await measureQcow2(l.path, l.format, 'replica', { forceShare: true })).required;
  }
  return total;
}

/**
 * Makes the replica in `dir`: each layer linked where it can be (see above, under `held`),
 * else flattened, read-only (mode 0444) and synced; returns the files and their allocated
 * size. The snapshot layers are immutable (the master writes above them), so they are read
 * with -U even while the master runs. A failure removes what it made.
 */
export async function makeReplica(
  dir: string,
  layers: ReplicaLayer[],
  opts: { held?: HeldLayers; onProgress?: (f: number) => void } = {},
): Promise<{ files: string[]; sizeBytes: number }> {
  await mkdir(dir, { recursive: true });
  const files: string[] = [];
  try {
    let sizeBytes = 0;
    for (const [i, l] of layers.entries()) {
      const file = join(dir, `disk${i}.qcow2`);
      const tmp = `${file}.partial`;
      files.push(file);
      await rm(tmp, { force: true });
      const isLinked =
        opts.held !== undefined &&
        (await isWholeQcow2(l)) &&
        (await opts.held(async (h) => h.masterOff && linkLayer(h.layers?.[i], l, file)));
      if (!isLinked) {
        await flattenToQcow2(l.path, l.format, tmp, 'replica', { forceShare: true });
        await syncFile(tmp);
        await chmod(tmp, 0o444);
        await rename(tmp, file);
      }
      sizeBytes += (await stat(file)).blocks * 512;
      opts.onProgress?.((i + 1) / layers.length);
    }
    await syncDirectory(dir);
    return { files, sizeBytes };
  } catch (e) {
    for (const f of files) await rm(f, { force: true });
    for (const f of files) await rm(`${f}.partial`, { force: true });
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

/** A regular qcow2 file that reads nothing from elsewhere: no backing file, no external data file, not marked corrupt. */
async function isWholeQcow2(l: ReplicaLayer): Promise<boolean> {
  if (l.format !== 'qcow2') return false;
  const st = await stat(l.path).catch(() => null);
  if (!st?.isFile()) return false;
  const info = await queryImageInfo(l.path, { format: 'qcow2', forceShare: true });
  return info.backingFile === null && info.dataFile === null && !info.corrupt;
}

/**
 * Links the layer as the replica file, once `now` (read under the master's lock) shows it is
 * still the snapshot's layer: a snapshot deleted meanwhile had its overlay committed into it.
 * False when the filesystem will not link (another filesystem, a link limit): copy instead.
 */
async function linkLayer(now: ReplicaLayer | undefined, l: ReplicaLayer, file: string): Promise<boolean> {
  if (!now || now.path !== l.path || now.format !== l.format) {
    throw new MamoriError(
      'SNAPSHOT_NOT_FOUND',
      `the master's snapshot changed while its replica was being made (${l.path} is no longer its layer); run the operation again`,
      { details: { path: l.path } },
    );
  }
  try {
    await link(l.path, file);
    return true;
  } catch (e) {
    if (['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP'].includes((e as NodeJS.ErrnoException).code ?? ''))
      return false;
    throw e;
  }
}

/** Removes a replica's files and its folder (once no desktop uses it: the caller checks). */
export async function removeReplica(files: string[]): Promise<void> {
  for (const f of files) await rm(f, { force: true });
  if (files[0]) await rm(dirname(files[0]), { recursive: true, force: true });
}

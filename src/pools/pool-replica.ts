import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { snapshotOverlayIndex } from '../vms/vm-snapshots.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { runProcess } from '../core/run-process.js';
import { syncDirectory, syncFile } from '../core/durable-sync.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * A pool's replica (View Composer's): the master's snapshot flattened into one read-only
 * qcow2 per master disk, in one storage pool. Every desktop's OS disk there is an overlay
 * on it, so the snapshot's bytes are stored once per storage pool, however many desktops.
 */

/**
 * The replica is written once and only read after: extended L2 entries (sub-cluster
 * allocation, which the desktops' overlays keep for their writes) would only double its L2
 * tables, 256 KiB more per 4 GiB replica than plain 128 KiB clusters (bench/pools).
 */
const REPLICA_OPTIONS = 'cluster_size=131072';

/** The image holding disk `d` as it was at `snapshot` (with its backing chain): the layer below the snapshot's overlay. */
export function snapshotLayer(d: DiskRecord, snapshot: string): { path: string; format: string } {
  const i = snapshotOverlayIndex(d, snapshot);
  if (i < 0) throw new MamoriError('INVALID_INPUT', `disk ${d.name} has no layer for snapshot ${snapshot}: it was attached after the snapshot was taken`, { details: { disk: d.name, snapshot } });
  return i === 0 ? { path: d.path, format: d.format } : { path: d.overlays[i - 1]!, format: 'qcow2' };
}

/** Bytes the flattened copy of each layer will take (qemu-img measure: allocated data plus qcow2 metadata). */
export async function measureReplica(layers: { path: string; format: string }[]): Promise<number> {
  let total = 0;
  for (const l of layers) {
    const { stdout } = await runProcess('qemu-img', ['measure', '-U', '--output=json', '-f', l.format, '-O', 'qcow2', '-o', REPLICA_OPTIONS, l.path], { timeoutMs: 120_000 });
    total += Number((JSON.parse(stdout) as { required: number }).required);
  }
  return total;
}

/**
 * Flattens the layers into `dir`, read-only (mode 0444) and synced, and returns the files
 * and their size. The snapshot layers are immutable (the master writes above them), so they
 * are read with -U even while the master runs. A failure removes what it wrote.
 */
export async function makeReplica(dir: string, layers: { path: string; format: string }[], onProgress?: (f: number) => void): Promise<{ files: string[]; sizeBytes: number }> {
  await mkdir(dir, { recursive: true });
  const files: string[] = [];
  try {
    let sizeBytes = 0;
    for (const [i, l] of layers.entries()) {
      const file = join(dir, `disk${i}.qcow2`);
      const tmp = `${file}.partial`;
      files.push(file);
      await rm(tmp, { force: true });
      await runProcess('qemu-img', ['convert', '-U', '-W', '-m', '8', '-f', l.format, '-O', 'qcow2', '-o', REPLICA_OPTIONS, l.path, tmp], { timeoutMs: 6 * 3600_000 });
      await syncFile(tmp);
      await chmod(tmp, 0o444);
      await rename(tmp, file);
      sizeBytes += (await stat(file)).blocks * 512;
      onProgress?.((i + 1) / layers.length);
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

/** Removes a replica's files and its folder (once no desktop uses it: the caller checks). */
export async function removeReplica(files: string[]): Promise<void> {
  for (const f of files) await rm(f, { force: true });
  if (files[0]) await rm(dirname(files[0]), { recursive: true, force: true });
}

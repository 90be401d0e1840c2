import { stat, statfs } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import type { PoolSpec } from '../store/repos/pool-records.js';
import { dirname } from 'node:path';

/** Bytes a file takes on disk (its allocated blocks: holes and sparse regions cost nothing). */
export async function allocatedBytes(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.blocks * 512,
    () => 0,
  );
}

/** The nearest existing folder at or above `dir` (statfs of a storage pool not made yet). */
export async function existingParent(dir: string): Promise<string> {
  let d = dir;
  while (
    !(await stat(d).then(
      () => true,
      () => false,
    ))
  ) {
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  return d;
}

/** Desktops per storage pool in proportion to free space, summing to `total` (largest remainders). */
export function shares(total: number, free: number[]): number[] {
  const sum = free.reduce((a, b) => a + b, 0);
  if (sum <= 0) return free.map((_, i) => (i === 0 ? total : 0));
  const exact = free.map((f) => (total * f) / sum);
  const out = exact.map(Math.floor);
  const order = exact.map((e, i) => ({ i, r: e - Math.floor(e) })).sort((a, b) => b.r - a.r || a.i - b.i);
  const left = total - out.reduce((a, b) => a + b, 0);
  for (let k = 0; k < left; k++) out[order[k]!.i]!++;
  return out;
}

/** What a desktop needs beside its persistent and disposable disks: overlay metadata and the identity seed. */
const DESKTOP_OVERHEAD = 4 * 1024 * 1024;

/** Refused before anything is made when a storage pool lacks the room (one replica there, and its share of desktops). */
export async function assertRoom(
  poolDir: (storage: string) => string,
  spec: Pick<PoolSpec, 'storage' | 'persistentDiskBytes' | 'disposableDiskBytes'>,
  replicaBytes: number,
  desktops: number,
): Promise<void> {
  const per = DESKTOP_OVERHEAD + (spec.persistentDiskBytes ?? 0) + (spec.disposableDiskBytes ?? 0);
  const share = Math.ceil(desktops / spec.storage.length);
  for (const s of spec.storage) {
    const dir = poolDir(s);
    const fs = await statfs(await existingParent(dir));
    const free = Number(fs.bavail) * Number(fs.bsize);
    const need = replicaBytes + share * per;
    if (need > free) {
      throw new MamoriError(
        'POOL_FULL',
        `storage pool ${s} has ${gib(free)} free but ${desktops} desktops need ${gib(need)} there (replica ${gib(replicaBytes)}, ${share} desktops of ${gib(per)}): ` +
          'make the pool smaller, the persistent/disposable disks smaller, or add storage (--storage A,B)',
        { details: { storage: s, free, need } },
      );
    }
  }
}

function gib(n: number): string {
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Bytes a file takes on disk (its allocated blocks: holes and sparse regions cost nothing). */
export async function allocatedBytes(path: string): Promise<number> {
  return stat(path).then((s) => s.blocks * 512, () => 0);
}

/** The nearest existing folder at or above `dir` (statfs of a storage pool not made yet). */
export async function existingParent(dir: string): Promise<string> {
  let d = dir;
  while (!(await stat(d).then(() => true, () => false))) {
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

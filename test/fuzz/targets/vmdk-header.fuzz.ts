import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { bufferInputs, describeBuffer, type BufferInput, type BufferSeed } from './buffer-target.js';

/**
 * The VMDK header reader of src/images/ (extents, parents, the embedded descriptor of sparse
 * files), which vets an outside VMDK before QEMU opens it. Seeds are real VMDKs: the first
 * 64 KiB of each subformat qemu-img writes, where the sparse header, descriptor and grain
 * directory live.
 */
export function vmdkHeaderTarget(
  readHeader: (bytes: Buffer) => unknown | Promise<unknown>,
): FuzzTarget<BufferSeed, BufferInput> {
  return {
    name: 'vmdk-header',
    seeds: vmdkSeeds,
    inputs: (seeds) => bufferInputs(seeds, { stream: true }),
    async run(input) {
      await readHeader(input.bytes);
    },
    describe: describeBuffer,
  };
}

async function vmdkSeeds(): Promise<BufferSeed[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-fuzz-vmdk-'));
  try {
    const out: BufferSeed[] = [];
    for (const sub of ['monolithicSparse', 'streamOptimized', 'monolithicFlat', 'twoGbMaxExtentSparse']) {
      const path = join(dir, `${sub}.vmdk`);
      await runProcess('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${sub}`, path, '64M'], {
        timeoutMs: 60_000,
      });
      const bytes = await readFile(path);
      out.push({ name: sub, bytes: bytes.subarray(0, 64 * 1024) });
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

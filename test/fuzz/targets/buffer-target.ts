import fc from 'fast-check';
import { applyOps, byteOps, type ByteOp, type ByteRange } from '../byte-mutations.js';

/** A small binary input (a hive, an archive, a byte stream) mutated into a fresh copy per input. */
export interface BufferSeed {
  name: string;
  bytes: Buffer;
  hot?: ByteRange[];
}
export interface BufferInput {
  seed: BufferSeed;
  ops: ByteOp[];
  bytes: Buffer;
}

export function bufferInputs(
  seeds: readonly BufferSeed[],
  opts: { stream?: boolean; maxOps?: number } = {},
): fc.Arbitrary<BufferInput> {
  return fc
    .constantFrom(...seeds)
    .chain((seed) =>
      byteOps(seed.bytes.length, seed.hot ?? [], opts).map((ops) => ({ seed, ops, bytes: applyOps(seed.bytes, ops) })),
    );
}

export function describeBuffer(input: BufferInput): unknown {
  return { seed: input.seed.name, ops: input.ops };
}

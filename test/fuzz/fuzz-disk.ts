import fc from 'fast-check';
import { MamoriError } from '../../src/core/mamori-error.js';
import type { ByteReader } from '../../src/inspect/byte-reader.js';
import { byteOps, mergeRanges, type ByteOp, type ByteRange } from './byte-mutations.js';
import { OversizedRead, type Deadline } from './fuzz-target.js';

/**
 * Disk images under fuzz: a real image (a few MiB) kept once in memory, and per input a list
 * of patches read through a ByteReader, so an input costs its patches and never a copy of
 * the image. The reader behaves as the inspector's own (src/inspect/image-source.ts): a read
 * outside the disk is a FILESYSTEM_UNREADABLE MamoriError.
 */
export interface DiskSeed {
  name: string;
  image: Buffer;
  /** What the target read of the clean image: where mutations go first. */
  hot: ByteRange[];
}

export interface DiskInput {
  seed: DiskSeed;
  ops: ByteOp[];
}

/** Metadata reads stay far below this; a larger one was sized by a field of the input. */
export const MAX_READ_BYTES = 64 * 1024 * 1024;

export function diskInputs(seeds: readonly DiskSeed[], maxOps = 6): fc.Arbitrary<DiskInput> {
  return fc
    .constantFrom(...seeds)
    .chain((seed) => byteOps(seed.image.length, seed.hot, { maxOps }).map((ops) => ({ seed, ops })));
}

export function describeDisk(input: DiskInput): unknown {
  return { seed: input.seed.name, ops: input.ops };
}

/** The mutated image as a ByteReader (patches applied on read; truncation shrinks it). */
export function diskReader(input: DiskInput, deadline: Deadline | null, trace?: ByteRange[]): ByteReader {
  const base = input.seed.image;
  let size = base.length;
  const patches: { at: number; bytes: Buffer }[] = [];
  for (const o of input.ops) {
    if (o.op === 'truncate') size = Math.min(size, o.length);
    else if (o.op === 'flip') patches.push({ at: o.at, bytes: Buffer.from([base[o.at]! ^ o.mask]) });
    else if (o.op === 'set') patches.push({ at: o.at, bytes: Buffer.from(o.bytes) });
    else if (o.op === 'copy') patches.push({ at: o.at, bytes: Buffer.from(base.subarray(o.from, o.from + o.length)) });
  }
  let reads = 0;
  return {
    size,
    async read(offset: number, length: number): Promise<Buffer> {
      deadline?.check();
      // Let timers run now and then: a parser looping on reads must not starve the runner's deadline.
      if (++reads % 512 === 0) await new Promise((resolve) => setImmediate(resolve));
      if (length > MAX_READ_BYTES) throw new OversizedRead(length, MAX_READ_BYTES);
      if (
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length < 0 ||
        offset + length > size
      ) {
        throw new MamoriError(
          'FILESYSTEM_UNREADABLE',
          `a read at byte ${offset} (${length} bytes) falls outside the ${size}-byte disk`,
        );
      }
      trace?.push({ start: offset, length });
      const out = Buffer.from(base.subarray(offset, offset + length));
      for (const p of patches) {
        const from = Math.max(offset, p.at);
        const to = Math.min(offset + length, p.at + p.bytes.length);
        if (from < to) p.bytes.copy(out, from - offset, from - p.at, to - p.at);
      }
      return out;
    },
  };
}

/** A seed whose hot ranges are what `exercise` reads of the clean image; the clean image must pass. */
export async function traceSeed(
  name: string,
  image: Buffer,
  exercise: (reader: ByteReader) => Promise<void>,
): Promise<DiskSeed> {
  const seed: DiskSeed = { name, image, hot: [] };
  const trace: ByteRange[] = [];
  await exercise(diskReader({ seed, ops: [] }, null, trace));
  // Whole-file reads are data, not metadata: only small reads say where the structures are.
  seed.hot = mergeRanges(
    trace.filter((r) => r.length <= 64 * 1024),
    16,
  );
  return seed;
}

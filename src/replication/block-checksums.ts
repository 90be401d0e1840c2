import { createHash } from 'node:crypto';
import { MamoriError } from '../core/mamori-error.js';
import { NBD_STATE } from '../nbd/nbd-protocol.js';
import type { NbdClient } from '../nbd/nbd-client.js';
import type { ByteRange } from '../nbd/extent-copy.js';

/**
 * Block checksums for resynchronising a replica whose source lost its dirty bitmap: each
 * side hashes its own disk in fixed chunks where it lies (the recovery site reads its newest
 * point locally), only the digests cross the link, and only chunks whose digests differ are
 * sent. Chunks the export reports as reading zero are hashed without being read, so a
 * sparse disk costs what it holds, not its size.
 */
export const DIGEST_BYTES = 32;
export const RESYNC_CHUNK = 1024 * 1024;
/** Most bytes one checksum request covers: 1024 digests, a few seconds of hashing. */
export const MAX_CHECKSUM_SPAN = 1024 * 1024 * 1024;

export type DigestSource = Pick<NbdClient, 'read' | 'extents' | 'size'>;

const zeroDigests = new Map<number, Buffer>();

/** The digest of `length` zero bytes (a chunk the export says reads as zeros). */
export function zeroDigest(length: number): Buffer {
  let d = zeroDigests.get(length);
  if (d === undefined) {
    d = createHash('sha256').update(Buffer.alloc(length)).digest();
    zeroDigests.set(length, d);
  }
  return d;
}

export function assertChecksumSpan(range: ByteRange, chunkSize: number, size: number): void {
  const ok =
    Number.isSafeInteger(range.offset) &&
    Number.isSafeInteger(range.length) &&
    range.offset >= 0 &&
    range.length > 0 &&
    range.length <= MAX_CHECKSUM_SPAN &&
    range.offset + range.length <= size &&
    Number.isSafeInteger(chunkSize) &&
    chunkSize >= 64 * 1024 &&
    chunkSize <= 4 * 1024 * 1024 &&
    (chunkSize & (chunkSize - 1)) === 0 &&
    range.offset % chunkSize === 0;
  if (!ok) {
    throw new MamoriError(
      'OUT_OF_RANGE',
      `checksum span ${range.offset}+${range.length} in chunks of ${chunkSize} is not valid for a disk of ${size} bytes: ` +
        `chunks are a power of two from 64 KiB to 4 MiB, the span starts on a chunk, ends within the disk and covers at most ${MAX_CHECKSUM_SPAN} bytes`,
      { details: { ...range, chunkSize, size } },
    );
  }
}

/** The chunks of a span: `chunkSize` each, the last cut at the span's end. */
export function chunksOf(range: ByteRange, chunkSize: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (let off = range.offset; off < range.offset + range.length; off += chunkSize) {
    out.push({ offset: off, length: Math.min(chunkSize, range.offset + range.length - off) });
  }
  return out;
}

export interface ChunkDigestOptions {
  concurrency?: number;
  /** Chunks wholly inside these ranges are not read: their digest is left all zero bytes (the caller sends them anyway). */
  skip?: readonly ByteRange[];
  /** Counts the bytes read from the export (benchmarks, cycle figures). */
  counter?: { bytesRead: number };
}

/** SHA-256 of each chunk of the span, concatenated in chunk order. */
export async function chunkDigests(
  client: DigestSource,
  range: ByteRange,
  chunkSize: number,
  options: ChunkDigestOptions = {},
): Promise<Buffer> {
  assertChecksumSpan(range, chunkSize, client.size);
  const chunks = chunksOf(range, chunkSize);
  const zero = zeroRanges(await client.extents('base:allocation', range.offset, range.length));
  const out = Buffer.alloc(chunks.length * DIGEST_BYTES);
  const skip = options.skip ?? [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < chunks.length) {
      const i = next++;
      const c = chunks[i]!;
      if (coveredBy(skip, c)) continue;
      let digest: Buffer;
      if (coveredBy(zero, c)) digest = zeroDigest(c.length);
      else {
        digest = createHash('sha256')
          .update(await client.read(c.offset, c.length))
          .digest();
        if (options.counter) options.counter.bytesRead += c.length;
      }
      digest.copy(out, i * DIGEST_BYTES);
    }
  };
  const concurrency = options.concurrency ?? 4;
  await Promise.all(Array.from({ length: Math.min(concurrency, chunks.length) }, worker));
  return out;
}

/** Which chunks differ between two digest lists of the same span, and whether the source's reads as zero. */
export function differingChunks(
  range: ByteRange,
  chunkSize: number,
  source: Buffer,
  replica: Buffer,
): { data: ByteRange[]; zero: ByteRange[] } {
  const chunks = chunksOf(range, chunkSize);
  if (source.length !== chunks.length * DIGEST_BYTES || replica.length !== source.length) {
    throw new MamoriError(
      'INTERNAL',
      `checksum lists do not match the span: ${chunks.length} chunks, ${source.length / DIGEST_BYTES} and ${replica.length / DIGEST_BYTES} digests`,
      { details: { ...range, chunkSize } },
    );
  }
  const data: ByteRange[] = [];
  const zero: ByteRange[] = [];
  for (const [i, c] of chunks.entries()) {
    const a = source.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
    if (a.equals(replica.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES))) continue;
    (a.equals(zeroDigest(c.length)) ? zero : data).push(c);
  }
  return { data, zero };
}

function zeroRanges(extents: readonly { offset: number; length: number; flags: number }[]): ByteRange[] {
  return extents.filter((e) => (e.flags & NBD_STATE.ZERO) !== 0).map((e) => ({ offset: e.offset, length: e.length }));
}

/** True if the chunk lies wholly inside the (sorted, contiguous-merged or not) ranges. */
export function coveredBy(zero: readonly ByteRange[], c: ByteRange): boolean {
  let at = c.offset;
  for (const z of zero) {
    if (z.offset > at) break;
    if (z.offset + z.length > at) at = z.offset + z.length;
    if (at >= c.offset + c.length) return true;
  }
  return at >= c.offset + c.length;
}

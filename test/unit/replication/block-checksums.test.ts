import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { NBD_STATE } from '../../../src/nbd/nbd-protocol.js';
import {
  DIGEST_BYTES,
  MAX_CHECKSUM_SPAN,
  chunkDigests,
  chunksOf,
  differingChunks,
  zeroDigest,
  type DigestSource,
} from '../../../src/replication/block-checksums.js';

const KiB = 1024;
const CHUNK = 64 * KiB;

/** A disk in memory with a base:allocation map: zero ranges are reported, and reads of them counted. */
function memoryDisk(
  size: number,
  data: { offset: number; fill: number; length: number }[],
): DigestSource & { reads: { offset: number; length: number }[] } {
  const bytes = Buffer.alloc(size);
  for (const d of data) bytes.fill(d.fill, d.offset, d.offset + d.length);
  const reads: { offset: number; length: number }[] = [];
  return {
    size,
    reads,
    read: async (offset: number, length: number) => {
      reads.push({ offset, length });
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
    // Allocated where data was written, zero elsewhere: like qcow2 clusters of CHUNK bytes.
    extents: async (_ctx: string, offset = 0, length = size - offset) => {
      const out = [];
      for (let o = offset; o < offset + length; o += CHUNK) {
        const allocated = data.some((d) => d.offset < o + CHUNK && d.offset + d.length > o);
        out.push({
          offset: o,
          length: Math.min(CHUNK, offset + length - o),
          flags: allocated ? 0 : NBD_STATE.ZERO | NBD_STATE.HOLE,
        });
      }
      return out;
    },
  } as DigestSource & { reads: { offset: number; length: number }[] };
}

test('chunk digests are SHA-256 of each chunk; chunks reported zero are not read', async () => {
  const disk = memoryDisk(8 * CHUNK + 4 * KiB, [
    { offset: CHUNK + 100, fill: 0xab, length: 10 },
    { offset: 8 * CHUNK, fill: 1, length: 4 * KiB },
  ]);
  const span = { offset: 0, length: disk.size };
  const digests = await chunkDigests(disk, span, CHUNK);
  const chunks = chunksOf(span, CHUNK);
  assert.equal(chunks.length, 9);
  assert.equal(chunks.at(-1)!.length, 4 * KiB, 'the last chunk ends with the disk');
  assert.equal(digests.length, 9 * DIGEST_BYTES);
  for (const [i, c] of chunks.entries()) {
    const expected = createHash('sha256')
      .update(await disk.read(c.offset, c.length))
      .digest();
    assert.deepEqual(digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES), expected, `chunk ${i}`);
  }
  // Before the check above re-read everything: only the two allocated chunks were read for hashing.
  assert.deepEqual(
    disk.reads
      .slice(0, 2)
      .map((r) => r.offset)
      .sort((a, b) => a - b),
    [CHUNK, 8 * CHUNK],
  );
  assert.equal(disk.reads.length, 2 + 9);
});

test('differing chunks: data where the source holds data, zeroes where it now reads zero', async () => {
  const size = 6 * CHUNK;
  const source = memoryDisk(size, [
    { offset: 0, fill: 1, length: CHUNK },
    { offset: 2 * CHUNK, fill: 2, length: CHUNK },
    { offset: 4 * CHUNK, fill: 5, length: 10 },
  ]);
  const replica = memoryDisk(size, [
    { offset: 0, fill: 1, length: CHUNK },
    { offset: 2 * CHUNK, fill: 3, length: CHUNK },
    { offset: 3 * CHUNK, fill: 9, length: CHUNK },
  ]);
  const span = { offset: 0, length: size };
  const diff = differingChunks(
    span,
    CHUNK,
    await chunkDigests(source, span, CHUNK),
    await chunkDigests(replica, span, CHUNK),
  );
  assert.deepEqual(diff.data, [
    { offset: 2 * CHUNK, length: CHUNK },
    { offset: 4 * CHUNK, length: CHUNK },
  ]);
  assert.deepEqual(
    diff.zero,
    [{ offset: 3 * CHUNK, length: CHUNK }],
    'the replica holds data the source no longer has',
  );
  assert.deepEqual(zeroDigest(CHUNK), createHash('sha256').update(Buffer.alloc(CHUNK)).digest());
});

test('checksum spans are checked: chunk size, alignment, bounds, at most 1 GiB', async () => {
  const disk = memoryDisk(4 * CHUNK, []);
  for (const [span, chunk] of [
    [{ offset: 0, length: 4 * CHUNK }, 3 * KiB],
    [{ offset: 0, length: 4 * CHUNK }, 8 * 1024 * KiB],
    [{ offset: KiB, length: CHUNK }, CHUNK],
    [{ offset: 0, length: 5 * CHUNK }, CHUNK],
    [{ offset: 0, length: 0 }, CHUNK],
  ] as const) {
    await assert.rejects(
      chunkDigests(disk, span, chunk),
      (e) => isMamoriError(e, 'OUT_OF_RANGE'),
      JSON.stringify({ span, chunk }),
    );
  }
  const never = () => Promise.reject(new Error('not reached'));
  const big: DigestSource = { size: MAX_CHECKSUM_SPAN + CHUNK, read: never, extents: never };
  await assert.rejects(chunkDigests(big, { offset: 0, length: MAX_CHECKSUM_SPAN + CHUNK }, CHUNK), (e) =>
    isMamoriError(e, 'OUT_OF_RANGE'),
  );
  assert.throws(
    () =>
      differingChunks({ offset: 0, length: 2 * CHUNK }, CHUNK, Buffer.alloc(DIGEST_BYTES), Buffer.alloc(DIGEST_BYTES)),
    (e) => isMamoriError(e, 'INTERNAL'),
  );
});

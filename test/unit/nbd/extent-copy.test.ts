import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  allocatedExtents,
  copyExtents,
  dirtyExtents,
  type CopySource,
  type CopyTarget,
  type ExtentSource,
} from '../../../src/nbd/extent-copy.js';
import type { NbdExtent } from '../../../src/nbd/nbd-client.js';
import { decodeTransmissionFlags, type NbdTransmissionFlags } from '../../../src/nbd/nbd-protocol.js';

const KiB = 1024;

/** An in-memory export standing in for an NbdClient on either side of a copy. */
class MemoryDisk implements CopySource, CopyTarget {
  readonly data: Buffer;
  readonly log: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  failAt: number | null = null;
  readonly transmissionFlags: NbdTransmissionFlags;
  readonly blockSizes: { min: number; preferred: number; max: number };
  readonly maxRequestLength: number;

  constructor(size: number, opts: { zeroes?: boolean; flush?: boolean; min?: number; max?: number } = {}) {
    this.data = Buffer.alloc(size);
    this.transmissionFlags = decodeTransmissionFlags(
      1 | (opts.flush === false ? 0 : 4) | (opts.zeroes === false ? 0 : 0x40),
    );
    this.blockSizes = { min: opts.min ?? 1, preferred: 4096, max: opts.max ?? 32 << 20 };
    this.maxRequestLength = this.blockSizes.max;
  }
  async #op<T>(what: string, offset: number, fn: () => T): Promise<T> {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setTimeout(r, 1));
    this.inFlight -= 1;
    if (this.failAt === offset) throw new Error(`injected failure at ${offset}`);
    this.log.push(what);
    return fn();
  }
  /** Buffers reads were asked to land in (NbdClient's `into`). */
  readonly intoBuffers = new Set<Buffer>();
  read(offset: number, length: number, options: { into?: Buffer } = {}): Promise<Buffer> {
    if (options.into) this.intoBuffers.add(options.into);
    return this.#op(`read ${offset}+${length}`, offset, () => {
      const out = options.into?.subarray(0, length) ?? Buffer.alloc(length);
      this.data.copy(out, 0, offset, offset + length);
      return out;
    });
  }
  write(offset: number, data: Buffer): Promise<void> {
    return this.#op(`write ${offset}+${data.length}`, offset, () => {
      data.copy(this.data, offset);
    });
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#op(`zero ${offset}+${length}`, offset, () => {
      this.data.fill(0, offset, offset + length);
    });
  }
  flush(): Promise<void> {
    return this.#op('flush', -1, () => undefined);
  }
}

function extentSource(size: number, extents: NbdExtent[]): ExtentSource {
  return { size, extents: async () => extents };
}

describe('copyExtents', () => {
  it('copies data, sends zero chunks as WRITE_ZEROES, flushes, and counts bytes and requests', async () => {
    const source = new MemoryDisk(1024 * KiB);
    source.data.fill(0xab, 0, 50 * KiB);
    source.data.fill(0xcd, 512 * KiB, 576 * KiB);
    const target = new MemoryDisk(1024 * KiB);
    target.data.fill(0xff);
    const progress: number[] = [];
    const r = await copyExtents({
      source,
      target,
      chunkSize: 64 * KiB,
      concurrency: 3,
      extents: [
        { offset: 512 * KiB, length: 64 * KiB },
        { offset: 0, length: 128 * KiB },
        { offset: 64 * KiB, length: 32 * KiB },
      ],
      onProgress: (p) => progress.push(p.bytesDone),
    });
    assert.deepEqual(r, { bytesRead: 192 * KiB, bytesWritten: 128 * KiB, zeroBytes: 64 * KiB, requests: 7 });
    assert.deepEqual(target.data.subarray(0, 128 * KiB), source.data.subarray(0, 128 * KiB));
    assert.deepEqual(target.data.subarray(512 * KiB, 576 * KiB), source.data.subarray(512 * KiB, 576 * KiB));
    assert.deepEqual(
      target.data.subarray(128 * KiB, 512 * KiB),
      Buffer.alloc(384 * KiB, 0xff),
      'outside the extents untouched',
    );
    assert.ok(target.log.includes(`zero ${64 * KiB}+${64 * KiB}`), 'the zero chunk became WRITE_ZEROES');
    assert.equal(target.log.at(-1), 'flush');
    assert.equal(progress.at(-1), 192 * KiB);
  });

  it('skips zero chunks on a target known to be zero, and writes them when it cannot zero', async () => {
    const source = new MemoryDisk(256 * KiB);
    source.data.fill(1, 0, 64 * KiB);
    const fresh = new MemoryDisk(256 * KiB);
    const skipped = await copyExtents({
      source,
      target: fresh,
      extents: [{ offset: 0, length: 256 * KiB }],
      chunkSize: 64 * KiB,
      targetIsZero: true,
    });
    assert.deepEqual(skipped, {
      bytesRead: 256 * KiB,
      bytesWritten: 64 * KiB,
      zeroBytes: 192 * KiB,
      requests: 4 + 1 + 1,
    });
    const noZero = new MemoryDisk(256 * KiB, { zeroes: false, flush: false });
    noZero.data.fill(9);
    const written = await copyExtents({
      source,
      target: noZero,
      extents: [{ offset: 0, length: 256 * KiB }],
      chunkSize: 64 * KiB,
    });
    assert.deepEqual(written, { bytesRead: 256 * KiB, bytesWritten: 256 * KiB, zeroBytes: 192 * KiB, requests: 8 });
    assert.deepEqual(noZero.data, source.data);
  });

  it('keeps at most `concurrency` chunks in flight and caps chunks to both maximum payloads', async () => {
    const source = new MemoryDisk(4096 * KiB, { max: 256 * KiB });
    source.data.fill(7);
    const target = new MemoryDisk(4096 * KiB, { max: 128 * KiB, min: 512 });
    await copyExtents({
      source,
      target,
      extents: [{ offset: 0, length: 4096 * KiB }],
      concurrency: 2,
      chunkSize: 1024 * KiB,
    });
    assert.ok(source.maxInFlight <= 2 && target.maxInFlight <= 2, `${source.maxInFlight}/${target.maxInFlight}`);
    assert.equal(source.maxInFlight, 2);
    assert.ok(
      source.log.every((l) => l.endsWith(`+${128 * KiB}`)),
      source.log[0],
    );
    await assert.rejects(copyExtents({ source, target, extents: [{ offset: 100, length: 512 }] }), /not aligned/);
  });

  it('reads into one buffer per worker, reused only once its write has settled', async () => {
    const source = new MemoryDisk(4096 * KiB);
    for (let i = 0; i < source.data.length; i++) source.data[i] = (i * 13 + (i >> 16)) & 0xff;
    const target = new MemoryDisk(4096 * KiB);
    // Ranges of odd lengths: the last chunk of each is shorter than the buffer it lands in.
    const extents = [
      { offset: 0, length: 1000 * KiB },
      { offset: 1024 * KiB, length: 2500 * KiB },
    ];
    const c = await copyExtents({ source, target, extents, concurrency: 3, chunkSize: 64 * KiB });
    assert.equal(source.intoBuffers.size, 3, 'three workers, three buffers');
    assert.equal(c.bytesWritten, 3500 * KiB);
    for (const e of extents)
      assert.ok(
        target.data.subarray(e.offset, e.offset + e.length).equals(source.data.subarray(e.offset, e.offset + e.length)),
      );
    assert.ok(
      target.data.subarray(1000 * KiB, 1024 * KiB).equals(Buffer.alloc(24 * KiB)),
      'nothing outside the extents',
    );
  });

  it('stops at the first failure and rethrows it', async () => {
    const source = new MemoryDisk(1024 * KiB);
    source.data.fill(3);
    source.failAt = 128 * KiB;
    const target = new MemoryDisk(1024 * KiB);
    await assert.rejects(
      copyExtents({
        source,
        target,
        extents: [{ offset: 0, length: 1024 * KiB }],
        chunkSize: 64 * KiB,
        concurrency: 2,
      }),
      /injected failure/,
    );
    assert.ok(target.log.length < 16, `${target.log.length} writes after the failure`);
    assert.ok(!target.log.includes('flush'));
  });
});

describe('allocatedExtents and dirtyExtents', () => {
  it('keeps extents not known to be zero, merging neighbours', async () => {
    const src = extentSource(10 * 65536, [
      { offset: 0, length: 65536, flags: 0 },
      { offset: 65536, length: 65536, flags: 1 }, // data, hole without ZERO
      { offset: 131072, length: 131072, flags: 3 },
      { offset: 262144, length: 65536, flags: 2 }, // hole|zero, allocated zero
      { offset: 327680, length: 327680, flags: 0 },
    ]);
    assert.deepEqual(await allocatedExtents(src), [
      { offset: 0, length: 131072 },
      { offset: 327680, length: 327680 },
    ]);
  });

  it('keeps extents with the dirty bit set', async () => {
    const src = extentSource(4 << 20, [
      { offset: 0, length: 1 << 20, flags: 0 },
      { offset: 1 << 20, length: 65536, flags: 1 },
      { offset: (1 << 20) + 65536, length: 65536, flags: 1 },
      { offset: (1 << 20) + 131072, length: (3 << 20) - 131072, flags: 0 },
    ]);
    assert.deepEqual(await dirtyExtents(src, 'qemu:dirty-bitmap:b0'), [{ offset: 1 << 20, length: 131072 }]);
  });
});

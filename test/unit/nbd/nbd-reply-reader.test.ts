import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { PendingRequest, type PendingResult } from '../../../src/nbd/nbd-pending-request.js';
import { replyReaderFor } from '../../harness/reply-reader-for.js';

// Byte layouts from doc/proto.md, written here independently of the client's codec.
const SIMPLE_MAGIC = 0x67446698;
const CHUNK_MAGIC = 0x668e33ef;
const READ = 0;
const WRITE = 1;
const BLOCK_STATUS = 7;
const DATA = 1;
const HOLE = 2;
const STATUS = 5;
const ERROR = 0x8001;
const DONE = 1;
const CONTEXT = 1;

function chunk(cookie: bigint, type: number, flags: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(CHUNK_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

function simple(cookie: bigint, error: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(SIMPLE_MAGIC, 0);
  h.writeUInt32BE(error, 4);
  h.writeBigUInt64BE(cookie, 8);
  return Buffer.concat([h, data]);
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

function noise(n: number, seed: number): Buffer<ArrayBuffer> {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 7)) & 0xff;
  return b;
}

/** Requests in flight: two reads, a block status, a write; and the replies to them as one stream. */
function structuredCase(): { requests: PendingRequest[]; stream: Buffer } {
  const ids = new Set([CONTEXT]);
  const requests = [
    new PendingRequest(1n, READ, 4096, 8192, Buffer.alloc(8192), ids),
    new PendingRequest(2n, BLOCK_STATUS, 0, 1 << 20, null, ids),
    new PendingRequest(3n, WRITE, 0, 512, null, ids),
    new PendingRequest(4n, READ, 0, 512, Buffer.alloc(512), ids),
  ];
  const hole = Buffer.concat([u64(4096 + 6144), Buffer.alloc(4)]);
  hole.writeUInt32BE(2048, 8);
  // Many descriptors: a payload that spans several reads at small split sizes.
  const status = Buffer.alloc(4 + 8 * 64);
  status.writeUInt32BE(CONTEXT, 0);
  for (let i = 0; i < 64; i++) {
    status.writeUInt32BE(16384, 4 + 8 * i);
    status.writeUInt32BE(i % 2 === 0 ? 0 : 3, 8 + 8 * i);
  }
  const message = Buffer.from('no space left');
  const error = Buffer.alloc(6 + message.length);
  error.writeUInt32BE(28, 0);
  error.writeUInt16BE(message.length, 4);
  message.copy(error, 6);
  const stream = Buffer.concat([
    chunk(1n, DATA, 0, Buffer.concat([u64(4096), noise(6144, 1)])),
    chunk(2n, STATUS, 0, status),
    chunk(4n, DATA, DONE, Buffer.concat([u64(0), noise(512, 2)])),
    chunk(1n, HOLE, DONE, hole),
    chunk(2n, 0, DONE, Buffer.alloc(0)),
    chunk(3n, ERROR, DONE, error),
  ]);
  return { requests, stream };
}

/** Feeds `stream` in pieces of `piece` bytes, each one copied into one shared buffer that is scribbled over after each push. */
function feed(
  structured: boolean,
  requests: PendingRequest[],
  stream: Buffer,
  piece: number,
  transient: boolean,
): void {
  const pending = new Map(requests.map((r) => [r.cookie, r]));
  const reader = replyReaderFor(structured, pending);
  const shared = Buffer.alloc(piece);
  for (let at = 0; at < stream.length; at += piece) {
    const n = stream.copy(shared, 0, at, Math.min(stream.length, at + piece));
    reader.push(transient ? shared.subarray(0, n) : Buffer.from(shared.subarray(0, n)), transient);
    if (transient) shared.fill(0x5a);
  }
  assert.equal(pending.size, 0, `every request got its whole reply (pieces of ${piece})`);
}

async function outcome(p: PendingRequest): Promise<PendingResult | string> {
  return p.promise.then(
    (v) => (v instanceof Map ? new Map(v) : Buffer.isBuffer(v) ? Buffer.from(v) : v),
    (e: Error) => e.message,
  );
}

describe('NbdReplyReader with reads into a reused buffer', () => {
  it('decodes the same replies whatever the split, when each read is a view that is overwritten after the push', async () => {
    const reference = structuredCase();
    feed(true, reference.requests, reference.stream, reference.stream.length, false);
    const expected = await Promise.all(reference.requests.map(outcome));
    assert.deepEqual((expected[0] as Buffer).subarray(0, 6144), noise(6144, 1));
    assert.deepEqual((expected[0] as Buffer).subarray(6144), Buffer.alloc(2048), 'the hole reads as zeros');
    assert.equal((expected[1] as Map<number, unknown[]>).get(CONTEXT)!.length, 64);
    assert.deepEqual(expected[3], noise(512, 2));
    assert.match(String(expected[2]), /no space left/);
    for (const piece of [1, 3, 7, 16, 19, 20, 21, 29, 64, 100, 4096, 5000]) {
      const c = structuredCase();
      feed(true, c.requests, c.stream, piece, true);
      assert.deepEqual(await Promise.all(c.requests.map(outcome)), expected, `pieces of ${piece} bytes`);
    }
  });

  it('keeps simple replies whole across reads of a reused buffer', async () => {
    const ids = new Set<number>();
    const make = (): PendingRequest[] => [
      new PendingRequest(1n, READ, 0, 4096, Buffer.alloc(4096), ids),
      new PendingRequest(2n, WRITE, 0, 512, null, ids),
      new PendingRequest(3n, READ, 8192, 512, Buffer.alloc(512), ids),
    ];
    const stream = Buffer.concat([simple(2n, 0), simple(3n, 0, noise(512, 3)), simple(1n, 0, noise(4096, 4))]);
    for (const piece of [1, 5, 15, 16, 17, 511, 4096]) {
      const requests = make();
      feed(false, requests, stream, piece, true);
      const got = await Promise.all(requests.map(outcome));
      assert.deepEqual(got, [noise(4096, 4), undefined, noise(512, 3)], `pieces of ${piece} bytes`);
    }
  });
});

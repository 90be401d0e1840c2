import fc from 'fast-check';
import { NbdError } from '../../../src/nbd/nbd-error.js';
import { PendingRequest } from '../../../src/nbd/nbd-pending-request.js';
import {
  NBD_CMD,
  NBD_MAGIC,
  NBD_REPLY_FLAG,
  NBD_REPLY_TYPE,
  NbdProtocolViolation,
} from '../../../src/nbd/nbd-protocol.js';
import { replyReaderFor } from '../../harness/reply-reader-for.js';
import { applyOps, byteOps, type ByteOp } from '../byte-mutations.js';
import type { FuzzTarget } from '../fuzz-target.js';

/**
 * The transmission phase as NbdTransmission parses it: the reply reader splits the server's bytes
 * into replies and chunks, and each request in flight (PendingRequest) decodes its chunks.
 * Both throw NbdProtocolViolation on what the spec forbids, which the client turns into
 * NBD_PROTOCOL_ERROR and drops the connection; here it is turned the same way. The stream
 * arrives split at random points, as TCP delivers it.
 */
interface StreamSeed {
  name: string;
  structured: boolean;
  bytes: Buffer;
}
interface StreamInput {
  seed: StreamSeed;
  ops: ByteOp[];
  bytes: Buffer;
  splits: number[];
}

const META_CONTEXT_ID = 1;

/** Requests in flight when the stream arrives: a 4 KiB read, a block status, a write, a 512-byte read. */
function inFlight(): Map<bigint, PendingRequest> {
  const ids = new Set([META_CONTEXT_ID]);
  const requests = new Map([
    [1n, new PendingRequest(1n, NBD_CMD.READ, 4096, 4096, Buffer.alloc(4096), ids)],
    [2n, new PendingRequest(2n, NBD_CMD.BLOCK_STATUS, 0, 1 << 20, null, ids)],
    [3n, new PendingRequest(3n, NBD_CMD.WRITE, 0, 512, null, ids)],
    [4n, new PendingRequest(4n, NBD_CMD.READ, 0, 512, Buffer.alloc(512), ids)],
  ]);
  // A server error rejects its request's promise: nobody awaits it here.
  for (const p of requests.values()) p.promise.catch(() => undefined);
  return requests;
}

function chunk(cookie: bigint, type: number, flags: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(NBD_MAGIC.STRUCTURED_REPLY, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

function simple(cookie: bigint, error: number, data?: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(NBD_MAGIC.SIMPLE_REPLY, 0);
  h.writeUInt32BE(error, 4);
  h.writeBigUInt64BE(cookie, 8);
  return data ? Buffer.concat([h, data]) : h;
}

const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};

function structuredStream(): Buffer {
  const hole = Buffer.alloc(12);
  hole.writeBigUInt64BE(6144n, 0);
  hole.writeUInt32BE(2048, 8);
  const status = Buffer.alloc(4 + 16);
  status.writeUInt32BE(META_CONTEXT_ID, 0);
  status.writeUInt32BE(65536, 4);
  status.writeUInt32BE(3, 8);
  status.writeUInt32BE((1 << 20) - 65536, 12);
  status.writeUInt32BE(0, 16);
  const message = Buffer.from('disk full');
  const error = Buffer.alloc(6 + message.length);
  error.writeUInt32BE(28, 0);
  error.writeUInt16BE(message.length, 4);
  message.copy(error, 6);
  const errorOffset = Buffer.alloc(14 + 2);
  errorOffset.writeUInt32BE(5, 0);
  errorOffset.writeUInt16BE(2, 4);
  errorOffset.write('io', 6);
  errorOffset.writeBigUInt64BE(100n, 8);
  return Buffer.concat([
    chunk(1n, NBD_REPLY_TYPE.OFFSET_DATA, 0, Buffer.concat([u64(4096), Buffer.alloc(2048, 0xab)])),
    chunk(1n, NBD_REPLY_TYPE.OFFSET_HOLE, NBD_REPLY_FLAG.DONE, hole),
    chunk(2n, NBD_REPLY_TYPE.BLOCK_STATUS, 0, status),
    chunk(2n, NBD_REPLY_TYPE.NONE, NBD_REPLY_FLAG.DONE, Buffer.alloc(0)),
    chunk(3n, NBD_REPLY_TYPE.ERROR_OFFSET, 0, errorOffset.subarray(0, 16)),
    chunk(3n, NBD_REPLY_TYPE.ERROR, NBD_REPLY_FLAG.DONE, error),
    chunk(4n, NBD_REPLY_TYPE.OFFSET_DATA, NBD_REPLY_FLAG.DONE, Buffer.concat([u64(0), Buffer.alloc(512, 0xcd)])),
  ]);
}

function simpleStream(): Buffer {
  return Buffer.concat([simple(4n, 0, Buffer.alloc(512, 0xee)), simple(3n, 5), simple(1n, 0, Buffer.alloc(4096, 1))]);
}

function feed(structured: boolean, bytes: Buffer, splits: number[]): void {
  const pending = inFlight();
  const reader = replyReaderFor(structured, pending);
  let at = 0;
  for (const s of [...splits.map((x) => x % (bytes.length + 1)).sort((a, b) => a - b), bytes.length]) {
    if (s <= at) continue;
    reader.push(bytes.subarray(at, s));
    at = s;
  }
  for (const p of pending.values()) p.fail(new Error('stream ended'));
}

export const nbdReplyTarget: FuzzTarget<StreamSeed, StreamInput> = {
  name: 'nbd-reply',
  seeds: async () => [
    { name: 'structured', structured: true, bytes: structuredStream() },
    { name: 'simple', structured: false, bytes: simpleStream() },
  ],
  inputs: (seeds) =>
    fc
      .constantFrom(...seeds)
      .chain((seed) =>
        fc
          .tuple(byteOps(seed.bytes.length, [], { stream: true }), fc.array(fc.nat(), { maxLength: 6 }))
          .map(([ops, splits]) => ({ seed, ops, splits, bytes: applyOps(seed.bytes, ops) })),
      ),
  run(input) {
    try {
      feed(input.seed.structured, input.bytes, input.splits);
    } catch (e) {
      // What NbdTransmission does with it (#push): a typed error, the connection dropped.
      if (e instanceof NbdProtocolViolation) throw new NbdError('NBD_PROTOCOL_ERROR', e.message, { cause: e });
      throw e;
    }
  },
  describe: (input) => ({ seed: input.seed.name, ops: input.ops, splits: input.splits }),
};

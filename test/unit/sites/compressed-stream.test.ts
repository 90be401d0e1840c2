import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough, Duplex, Writable } from 'node:stream';
import { once } from 'node:events';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { AUTO_PROBE_FRAMES, CompressedStream, type WireCompressionMode } from '../../../src/sites/compressed-stream.js';
import { FRAME_KIND, frameHeader, lz4Payload } from '../../../src/sites/wire-frame.js';
import { encodeRecord } from '../../../src/guest/writelog-format.js';

const MiB = 1024 * 1024;
const BOOT = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

/** Two in-memory byte pipes joined as the two ends of one connection. */
function pipePair(): [Duplex, Duplex] {
  const aToB = new PassThrough();
  const bToA = new PassThrough();
  const a = Duplex.from({ readable: bToA, writable: aToB });
  const b = Duplex.from({ readable: aToB, writable: bToA });
  return [a, b];
}

function textLike(bytes: number): Buffer {
  const recs: Buffer[] = [];
  for (let seq = 1; recs.length * 4096 < bytes; seq++)
    recs.push(encodeRecord({ seq, timeNs: BigInt(seq) * 1000n, bootId: BOOT }, 'text'));
  return Buffer.concat(recs).subarray(0, bytes);
}

function mixed(bytes: number): Buffer {
  const parts: Buffer[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const len = 1000 + ((i * 7919) % 300_000);
    const part = i % 3 === 0 ? randomBytes(len) : i % 3 === 1 ? Buffer.alloc(len) : textLike(len);
    parts.push(part);
    n += len;
  }
  return Buffer.concat(parts).subarray(0, bytes);
}

/** Writes data through a sender in chunks of the given sizes (cycled) and collects what the receiver reads. */
async function roundTrip(
  data: Buffer,
  chunkSizes: number[],
  mode: WireCompressionMode,
  maxFrameBytes?: number,
): Promise<{ got: Buffer; sender: CompressedStream; receiver: CompressedStream }> {
  const [a, b] = pipePair();
  const opts = maxFrameBytes === undefined ? { mode } : { mode, maxFrameBytes };
  const sender = new CompressedStream(a, opts);
  const receiver = new CompressedStream(b, opts);
  const chunks: Buffer[] = [];
  receiver.on('data', (c: Buffer) => chunks.push(c));
  const ended = once(receiver, 'end');
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = chunkSizes[i % chunkSizes.length]!;
    if (!sender.write(data.subarray(off, off + n))) await once(sender, 'drain');
    off += n;
  }
  sender.end();
  await ended;
  return { got: Buffer.concat(chunks), sender, receiver };
}

for (const mode of ['lz4', 'none', 'auto'] as const) {
  test(`${mode}: random, zero, text-like and mixed data round-trip across frame edges and odd chunk sizes`, async () => {
    const sets: [string, Buffer][] = [
      ['random', randomBytes(3 * MiB + 17)],
      ['zero', Buffer.alloc(2 * MiB + 4095)],
      ['text', textLike(2 * MiB + 1)],
      ['mixed', mixed(3 * MiB)],
    ];
    for (const [name, data] of sets) {
      for (const sizes of [[1, 7, 4096, 65_537], [MiB + 3], [5 * MiB], [28, 4096, 16]]) {
        const { got, sender, receiver } = await roundTrip(data, sizes, mode, 64 * 1024);
        assert.ok(got.equals(data), `${name} with chunks ${sizes.join(',')} did not round-trip`);
        const c = sender.counters;
        assert.equal(c.bytesIn, data.length);
        assert.equal(receiver.counters.bytesOut, data.length);
        assert.equal(receiver.counters.wireBytesIn, c.wireBytesOut);
        if (mode === 'none') assert.equal(c.framesCompressed, 0);
      }
    }
  });
}

test('lz4: compressible data shrinks on the wire, random data goes raw at no more than 0.1% overhead', async () => {
  const text = await roundTrip(textLike(8 * MiB), [MiB], 'lz4');
  const tc = text.sender.counters;
  assert.ok(tc.wireBytesOut < tc.bytesIn / 2, `text: ${tc.wireBytesOut} wire bytes for ${tc.bytesIn}`);
  assert.equal(tc.framesRaw, 0);

  const rnd = await roundTrip(randomBytes(16 * MiB), [MiB], 'lz4');
  const rc = rnd.sender.counters;
  assert.equal(rc.framesCompressed, 0);
  assert.ok(rc.wireBytesOut <= rc.bytesIn * 1.001);
});

test('incompressible data: after misses lz4 is tried only now and then, and compressible data brings it back', async () => {
  const [a, b] = pipePair();
  const sender = new CompressedStream(a, { mode: 'lz4', maxFrameBytes: 4096 });
  b.resume();
  const send = async (data: Buffer): Promise<void> => {
    for (let off = 0; off < data.length; off += 4096)
      if (!sender.write(data.subarray(off, off + 4096))) await once(sender, 'drain');
  };
  await send(randomBytes(4096 * 600));
  // Skips of 1, 2, 4 ... 64, then 64 each time: 7 tries in the first 134 frames, then one in 65.
  let c = sender.counters;
  assert.equal(c.framesRaw, 600);
  assert.equal(c.framesCompressed, 0);
  assert.ok(c.lz4Attempts <= 16, `${c.lz4Attempts} lz4 attempts on 600 incompressible frames`);
  await send(textLike(4096 * 200));
  c = sender.counters;
  assert.ok(c.framesCompressed >= 130, `${c.framesCompressed} of 200 text frames compressed after sampling again`);
  sender.end();
  await once(sender, 'finish');
});

/** A receiver whose far end we write crafted bytes into. */
function hostileReceiver(): { feed: PassThrough; receiver: CompressedStream; failed: Promise<unknown> } {
  const feed = new PassThrough();
  const sink = new PassThrough();
  sink.resume();
  const receiver = new CompressedStream(Duplex.from({ readable: feed, writable: sink }), { maxFrameBytes: 64 * 1024 });
  receiver.resume();
  const failed = new Promise((resolve) => receiver.once('error', resolve));
  return { feed, receiver, failed };
}

const hostile: [string, () => Buffer][] = [
  ['no magic', () => Buffer.from('GET / HTTP/1.1\r\n\r\n')],
  ['a reserved byte set', () => Buffer.from([0x4d, 0x5a, 0, 1, 0, 0, 0, 1, 0])],
  ['an unknown kind', () => Buffer.concat([frameHeader(7 as 0, 4), Buffer.alloc(4)])],
  ['an empty raw frame', () => frameHeader(FRAME_KIND.raw, 0)],
  ['a raw frame over the limit (payload never sent)', () => frameHeader(FRAME_KIND.raw, 64 * 1024 + 1)],
  ['a 4 GiB frame (payload never sent)', () => frameHeader(FRAME_KIND.lz4, 0xffffffff)],
  [
    'an lz4 frame claiming 4 GiB decompressed',
    () => {
      const p = lz4Payload(Buffer.alloc(60_000));
      p.writeUInt32LE(0xfffffff0, 0);
      return Buffer.concat([frameHeader(FRAME_KIND.lz4, p.length), p]);
    },
  ],
  [
    'an lz4 frame claiming more than it holds',
    () => {
      const p = lz4Payload(Buffer.alloc(30_000));
      p.writeUInt32LE(40_000, 0);
      return Buffer.concat([frameHeader(FRAME_KIND.lz4, p.length), p]);
    },
  ],
  [
    'an lz4 frame claiming less than it holds',
    () => {
      const p = lz4Payload(Buffer.alloc(30_000));
      p.writeUInt32LE(100, 0);
      return Buffer.concat([frameHeader(FRAME_KIND.lz4, p.length), p]);
    },
  ],
  [
    'lz4 garbage',
    () => {
      const p = randomBytes(5000);
      p.writeUInt32LE(60_000, 0);
      p[4] = 0xff;
      return Buffer.concat([frameHeader(FRAME_KIND.lz4, p.length), p]);
    },
  ],
];

for (const [name, bytes] of hostile) {
  test(`a frame with ${name} is refused with WIRE_FRAME_INVALID and both streams are closed`, async () => {
    const { feed, receiver, failed } = hostileReceiver();
    // A good frame first: what came before the bad one is delivered.
    feed.write(Buffer.concat([frameHeader(FRAME_KIND.raw, 3), Buffer.from('abc')]));
    feed.write(bytes());
    const err = await failed;
    assert.ok(isMamoriError(err, 'WIRE_FRAME_INVALID'), `got ${String(err)}`);
    assert.equal(receiver.counters.bytesOut, 3);
    assert.ok(receiver.destroyed);
  });
}

test('random lz4 payloads never crash the receiver: each is a typed error or bytes within the limit', async () => {
  for (let i = 0; i < 300; i++) {
    const { feed, receiver, failed } = hostileReceiver();
    const p = randomBytes(8 + (i % 200));
    p.writeUInt32LE(1 + ((i * 2654435761) % (64 * 1024)), 0);
    let got = 0;
    receiver.on('data', (c: Buffer) => (got += c.length));
    feed.end(Buffer.concat([frameHeader(FRAME_KIND.lz4, p.length), p]));
    const outcome = await Promise.race([failed, once(receiver, 'end').then(() => 'end')]);
    if (outcome === 'end') assert.ok(got <= 64 * 1024);
    else assert.ok(isMamoriError(outcome, 'WIRE_FRAME_INVALID'), `got ${String(outcome)}`);
  }
});

test('the peer closing mid-frame is NBD_DISCONNECTED (retryable), not a clean end', async () => {
  const { feed, failed } = hostileReceiver();
  feed.end(Buffer.concat([frameHeader(FRAME_KIND.raw, 100), Buffer.alloc(50)]));
  const err = await failed;
  assert.ok(isMamoriError(err, 'NBD_DISCONNECTED'));
  assert.equal((err as { retryable: boolean }).retryable, true);
});

test('write side: a link that takes nothing holds the writer; buffering stays within about two frames', async () => {
  const link = new PassThrough({ highWaterMark: 16 * 1024 }); // never read
  const sender = new CompressedStream(Duplex.from({ readable: new PassThrough(), writable: link }), {
    mode: 'none',
    maxFrameBytes: 256 * 1024,
  });
  let completed = 0;
  for (let i = 0; i < 64; i++) sender.write(Buffer.alloc(64 * 1024, i), () => completed++);
  // Wait until the sender stops taking frames: its wire counter no longer moves.
  let last = -1;
  while (sender.counters.wireBytesOut !== last) {
    last = sender.counters.wireBytesOut;
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(last <= 3 * 256 * 1024 + 64, `${last} bytes went to a link that reads nothing`);
  assert.ok(completed < 64);
  // Reading the link lets everything through.
  const drained = once(sender, 'finish');
  link.resume();
  sender.end();
  await drained;
  assert.equal(completed, 64);
  assert.equal(sender.counters.bytesIn, 64 * 64 * 1024);
});

test('read side: a reader that reads nothing pauses the link; zeros do not inflate ahead of it', async () => {
  const [a, b] = pipePair();
  const sender = new CompressedStream(a, { mode: 'lz4', maxFrameBytes: 1024 * 1024 });
  const receiver = new CompressedStream(b, { maxFrameBytes: 1024 * 1024 });
  // 256 MiB of zeros is about 1 MiB on the wire: a receiver that inflated eagerly would hold it all.
  let sent = 0;
  const writing = (async () => {
    for (let i = 0; i < 256; i++) {
      if (!sender.write(Buffer.alloc(1024 * 1024))) await once(sender, 'drain');
      sent++;
    }
    sender.end();
  })();
  // Wait until nothing moves any more.
  let last = -1;
  while (receiver.counters.bytesOut !== last || sent === 0) {
    last = receiver.counters.bytesOut;
    for (let k = 0; k < 20; k++) await new Promise((r) => setImmediate(r));
  }
  // Decoded bytes are only what the reader's buffer takes (its mark is one frame) plus one frame.
  assert.ok(receiver.counters.bytesOut <= 2 * 1024 * 1024, `receiver inflated ${receiver.counters.bytesOut} bytes`);
  assert.ok(receiver.readableLength <= 2 * 1024 * 1024, `receiver holds ${receiver.readableLength} bytes`);
  let got = 0;
  receiver.on('data', (c: Buffer) => (got += c.length));
  await once(receiver, 'end');
  await writing;
  assert.equal(got, 256 * 1024 * 1024);
});

test('auto: a stream starts compressing, goes raw once the link has kept up for 32 frames, compresses on a slow link', async () => {
  // A link that takes every frame at once (it is faster than anything we send).
  const keepsUp = new Writable({ write: (_c, _e, cb) => cb() });
  const fast = new CompressedStream(Duplex.from({ readable: new PassThrough(), writable: keepsUp }), {
    mode: 'auto',
    maxFrameBytes: 4096,
  });
  fast.end(textLike(200 * 4096));
  await once(fast, 'finish');
  assert.equal(fast.counters.framesCompressed, AUTO_PROBE_FRAMES);
  assert.equal(fast.counters.framesRaw, 200 - AUTO_PROBE_FRAMES);

  // A 10 MB/s link (each write is taken after its length at that rate): slower than lz4.
  let wire = 0;
  const slow = new Writable({
    highWaterMark: 16 * 1024,
    write: (c: Buffer, _e, cb) => {
      wire += c.length;
      setTimeout(cb, c.length / 10_000);
    },
  });
  const sender = new CompressedStream(Duplex.from({ readable: new PassThrough(), writable: slow }), { mode: 'auto' });
  sender.end(textLike(8 * MiB));
  await once(sender, 'finish');
  const c = sender.counters;
  assert.equal(c.framesCompressed, 8, `${c.framesCompressed} of 8 frames compressed on a slow link`);
  assert.equal(wire, c.wireBytesOut);

  // Incompressible data on the same backed-up link: raw, with few attempts.
  const aToB2 = new PassThrough();
  const s2 = new CompressedStream(Duplex.from({ readable: new PassThrough(), writable: aToB2 }), { mode: 'auto' });
  s2.end(randomBytes(32 * MiB));
  await new Promise((r) => setImmediate(r));
  aToB2.resume();
  await once(s2, 'finish');
  assert.equal(s2.counters.framesCompressed, 0);
  assert.ok(s2.counters.lz4Attempts <= 8, `${s2.counters.lz4Attempts} attempts on 32 incompressible frames`);
});

test('auto: a link that slows down brings compression back', async () => {
  let slow = false;
  const link = new Writable({
    highWaterMark: 16 * 1024,
    // Fast: taken at once. Slow: about 1 MB/s.
    write: (c: Buffer, _e, cb) => (slow ? setTimeout(cb, c.length / 1000) : cb()),
  });
  const sender = new CompressedStream(Duplex.from({ readable: new PassThrough(), writable: link }), {
    mode: 'auto',
    maxFrameBytes: 4096,
  });
  const send = async (frames: number): Promise<void> => {
    const data = textLike(frames * 4096);
    for (let off = 0; off < data.length; off += 4096)
      if (!sender.write(data.subarray(off, off + 4096))) await once(sender, 'drain');
  };
  await send(AUTO_PROBE_FRAMES + 8);
  const fast = sender.counters;
  assert.equal(fast.framesRaw, 8, 'raw once the fast link kept up for AUTO_PROBE_FRAMES frames');
  slow = true;
  await send(60);
  sender.end();
  await once(sender, 'finish');
  const c = sender.counters;
  // A few raw frames fill the slow link's buffer; the first wait measures it and lz4 comes back.
  assert.ok(c.framesCompressed - fast.framesCompressed >= 50, `${c.framesCompressed - fast.framesCompressed} of 60`);
});

test('errors, end and destroy propagate between the wrapper and the wrapped stream', async () => {
  const a = new PassThrough();
  const s = new CompressedStream(a);
  const failed = once(s, 'error');
  a.destroy(new Error('socket reset'));
  const [err] = (await failed) as [Error];
  assert.equal(err.message, 'socket reset');

  const c = new PassThrough();
  const s2 = new CompressedStream(c);
  s2.destroy();
  await once(c, 'close');
  assert.ok(c.destroyed);

  // A loop: what s3 writes comes back to its own read side, then the end.
  const e = new PassThrough();
  const s3 = new CompressedStream(e);
  const got: Buffer[] = [];
  s3.on('data', (b: Buffer) => got.push(b));
  const ended = once(s3, 'end');
  s3.end(Buffer.from('last words'));
  await ended;
  assert.equal(Buffer.concat(got).toString(), 'last words');
  assert.ok(e.writableFinished);
});

test('a peer that ends and closes the connection closes the wrapper too, after its reader has every byte', async () => {
  const [a, b] = pipePair();
  const sender = new CompressedStream(a, { mode: 'none' });
  const receiver = new CompressedStream(b, { mode: 'none' });
  const got: Buffer[] = [];
  receiver.on('data', (c: Buffer) => got.push(c));
  const closed = once(receiver, 'close');
  const data = randomBytes(300_000);
  sender.write(data);
  sender.end();
  await once(a, 'finish');
  // The far end goes away (as the recovery site drops the socket when its daemon closes the
  // export): the wrapper must close, not stay half open with its writable side waiting.
  b.destroy();
  await closed;
  assert.ok(Buffer.concat(got).equals(data));
  assert.equal(receiver.destroyed, true);
});

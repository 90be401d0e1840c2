import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { DelayLine } from '../../harness/delay-line.js';

/*
 * The WAN forwarder's delay line on loopback TCP (no namespaces): no byte leaves before its
 * delay, order is kept, and a receiver that stops reading holds the sender back instead of
 * letting the line queue without bound.
 */

/** Two connected socket pairs on loopback: sender -> (srcEnd | DelayLine | dstEnd) -> receiver. */
async function pipeThroughLine(delayMs: number, maxBufferedBytes: number, readBatchMs = 0) {
  const server: Server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accept = (): Promise<Socket> => once(server, 'connection').then(([s]) => s as Socket);
  const acceptedSrc = accept();
  const sender = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const srcEnd = await acceptedSrc;
  const acceptedReceiver = accept();
  const dstEnd = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const receiver = await acceptedReceiver;
  const line = new DelayLine(srcEnd, dstEnd, { delayMs, maxBufferedBytes, readBatchMs });
  const close = (): void => {
    for (const s of [sender, srcEnd, dstEnd, receiver]) s.destroy();
    server.close();
  };
  return { sender, receiver, line, srcEnd, close };
}

for (const readBatchMs of [0, 2]) {
  test(`every record arrives at least the delay after it was sent, in order (read batches of ${readBatchMs} ms)`, async () => {
    const delayMs = 30;
    const p = await pipeThroughLine(delayMs, 1 << 20, readBatchMs);
    try {
      const arrivals: { index: number; sentAt: number; at: number }[] = [];
      let pending = Buffer.alloc(0);
      p.receiver.on('data', (chunk: Buffer) => {
        const at = performance.now();
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 12) {
          arrivals.push({ index: pending.readUInt32BE(0), sentAt: pending.readDoubleBE(4), at });
          pending = pending.subarray(12);
        }
      });
      const count = 40;
      for (let i = 0; i < count; i++) {
        const rec = Buffer.alloc(12);
        rec.writeUInt32BE(i, 0);
        rec.writeDoubleBE(performance.now(), 4);
        p.sender.write(rec);
        // Records spread over a few delays, so several are in the line at once.
        await new Promise((r) => setTimeout(r, 3));
      }
      p.sender.end();
      await once(p.receiver, 'end');
      assert.deepEqual(
        arrivals.map((a) => a.index),
        [...Array(count).keys()],
      );
      for (const a of arrivals) assert.ok(a.at - a.sentAt >= delayMs, `record ${a.index} after ${a.at - a.sentAt} ms`);
    } finally {
      p.close();
    }
  });
}

test('a receiver that stops reading pauses the line at its bound; everything arrives once it reads again', async () => {
  const max = 256 * 1024;
  const p = await pipeThroughLine(5, max);
  try {
    p.receiver.pause();
    const payload = randomBytes(32 << 20);
    const sent = createHash('sha256').update(payload).digest('hex');
    p.sender.end(payload);
    // The line pauses its source once full; kernel buffers fill behind it and the sender's
    // write stays queued. Wait for that state, then look at what the line holds.
    const deadline = Date.now() + 30_000;
    while (!(p.srcEnd.isPaused() && p.sender.writableLength > 0) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.ok(p.srcEnd.isPaused(), 'the line paused its source');
    assert.ok(p.sender.writableLength > 0, 'the sender is held back');
    // One read past the bound at most (Node reads 64 KiB at a time).
    assert.ok(p.line.buffered <= max + 64 * 1024, `the line holds ${p.line.buffered} bytes`);

    const hash = createHash('sha256');
    let got = 0;
    p.receiver.on('data', (c: Buffer) => {
      hash.update(c);
      got += c.length;
    });
    p.receiver.resume();
    await once(p.receiver, 'end');
    assert.equal(got, payload.length);
    assert.equal(hash.digest('hex'), sent);
  } finally {
    p.close();
  }
});

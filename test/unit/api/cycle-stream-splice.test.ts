import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spliceCycleStream } from '../../../src/api/cycle-streams.js';
import { CompressedStream } from '../../../src/sites/compressed-stream.js';
import { NBD_MAGIC, NBD_OPT, encodeOption } from '../../../src/nbd/nbd-protocol.js';

/*
 * The splice between a cycle stream and the staging daemon's socket (loopback TCP for the
 * upgraded connection, a unix socket standing in for the daemon): every byte the client sends
 * after its handshake reaches the daemon, in order, across the moment the option guard leaves
 * the path, and writes gathered per turn of the event loop lose nothing.
 */

function nameData(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(n.length);
  return Buffer.concat([len, n, Buffer.alloc(2)]);
}

function request(): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(NBD_MAGIC.REQUEST, 0);
  return b;
}

const listening = (s: Server, ...args: unknown[]): Promise<void> =>
  new Promise((resolve) => (s.listen as (...a: unknown[]) => void)(...args, () => resolve()));

test('every byte after the handshake reaches the daemon in order, across the guard leaving the path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-splice-'));
  const received: Buffer[] = [];
  let daemonDone!: () => void;
  const daemonClosed = new Promise<void>((r) => (daemonDone = r));
  const daemon = createServer((s) => {
    s.on('data', (c: Buffer) => received.push(c));
    s.on('end', () => {
      s.end();
      daemonDone();
    });
  });
  await listening(daemon, join(dir, 'nbd.sock'));
  const front = createServer((socket: Socket) => {
    void spliceCycleStream(socket, Buffer.alloc(0), {
      socketPath: join(dir, 'nbd.sock'),
      exportName: 's1d0',
      track: () => undefined,
    });
  });
  await listening(front, 0, '127.0.0.1');
  try {
    const port = (front.address() as { port: number }).port;
    const client = createConnection({ port, host: '127.0.0.1' });
    await new Promise<void>((r) => client.once('connect', () => r()));
    // The 101 answer, then the framed stream.
    await new Promise<void>((resolve) => {
      let seen = '';
      const onData = (c: Buffer): void => {
        seen += c.toString('latin1');
        if (seen.includes('\r\n\r\n')) {
          client.off('data', onData);
          client.pause();
          resolve();
        }
      };
      client.on('data', onData);
    });
    const wire = new CompressedStream(client, { mode: 'none' });
    const handshake = Buffer.concat([
      Buffer.from([0, 0, 0, 3]),
      encodeOption(NBD_OPT.STRUCTURED_REPLY, Buffer.alloc(0)),
      encodeOption(NBD_OPT.GO, nameData('s1d0')),
    ]);
    // The first request shares a write with the end of the handshake; then many writes of
    // uneven sizes, some back to back in one turn, some a turn apart.
    const payload = randomBytes(3 * 1024 * 1024 + 777);
    const sent = Buffer.concat([handshake, request(), payload]);
    wire.write(Buffer.concat([handshake, request(), payload.subarray(0, 100)]));
    let off = 100;
    for (let k = 0; off < payload.length; k++) {
      const n = Math.min(payload.length - off, 1 + ((k * 7919) % 200_000));
      wire.write(payload.subarray(off, off + n));
      off += n;
      if (k % 5 === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise<void>((r) => wire.end(r));
    await daemonClosed;
    const got = Buffer.concat(received);
    assert.equal(got.length, sent.length, 'as many bytes reached the daemon as were sent');
    assert.ok(got.equals(sent), 'the same bytes, in order');
    client.destroy();
  } finally {
    front.close();
    daemon.close();
    await rm(dir, { recursive: true, force: true });
  }
});

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

const handshake = Buffer.concat([
  Buffer.from([0, 0, 0, 3]),
  encodeOption(NBD_OPT.STRUCTURED_REPLY, Buffer.alloc(0)),
  encodeOption(NBD_OPT.GO, nameData('s1d0')),
]);

/** Listens for the daemon on DIR/nbd.sock, and returns a loopback server that splices each connection to it. */
async function spliceFront(daemon: Server, dir: string, closeGraceMs?: number): Promise<Server> {
  await listening(daemon, join(dir, 'nbd.sock'));
  const front = createServer((socket: Socket) => {
    void spliceCycleStream(socket, Buffer.alloc(0), {
      socketPath: join(dir, 'nbd.sock'),
      exportName: 's1d0',
      track: () => undefined,
      ...(closeGraceMs === undefined ? {} : { closeGraceMs }),
    });
  });
  await listening(front, 0, '127.0.0.1');
  return front;
}

/** A client of the splice behind `front`: past the 101 answer, its framed stream. */
async function upgraded(front: Server): Promise<{ client: Socket; wire: CompressedStream }> {
  const port = (front.address() as { port: number }).port;
  const client = createConnection({ port, host: '127.0.0.1' });
  await new Promise<void>((r) => client.once('connect', () => r()));
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
  return { client, wire: new CompressedStream(client, { mode: 'none' }) };
}

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
  const front = await spliceFront(daemon, dir);
  try {
    const { client, wire } = await upgraded(front);
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

test("a cut drops the daemon's side at once; a clean close hands the daemon every byte and its end", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-splice-'));
  // A daemon that keeps its side open after the end of its input. On the first connection (the
  // cut) it then writes a last word: that fails with EPIPE only if the splice closed its side
  // already, as a grace timer of an hour would not have.
  interface Conn {
    bytes: number;
    error: string | null;
    closed: Promise<void>;
  }
  const conns: Conn[] = [];
  let arrived: () => void = () => undefined;
  const daemon = createServer({ allowHalfOpen: true }, (socket) => {
    let closed!: () => void;
    const c: Conn = { bytes: 0, error: null, closed: new Promise<void>((r) => (closed = r)) };
    socket.on('data', (d: Buffer) => (c.bytes += d.length));
    const first = conns.length === 0;
    socket.on('end', () => (first ? socket.end('bye') : socket.end()));
    socket.on('error', (e: NodeJS.ErrnoException) => (c.error = e.code ?? e.message));
    socket.on('close', () => closed());
    conns.push(c);
    arrived();
  });
  // An hour: a daemon's side dropped in this test was dropped by the cut, not by the grace.
  const front = await spliceFront(daemon, dir, 3_600_000);
  const nextConn = (): Promise<Conn> => {
    const n = conns.length;
    return new Promise<Conn>((resolve) => {
      arrived = () => resolve(conns[n]!);
      if (conns.length > n) arrived();
    });
  };
  try {
    // A cut: the client resets the connection once the daemon has its handshake.
    const cutConn = nextConn();
    const cut = await upgraded(front);
    cut.wire.write(Buffer.concat([handshake, request(), randomBytes(64 * 1024)]));
    const c1 = await cutConn;
    await new Promise<void>((r) => {
      const check = (): void => (c1.bytes >= handshake.length ? r() : void setTimeout(check, 5));
      check();
    });
    cut.client.resetAndDestroy();
    await c1.closed;
    assert.equal(c1.error, 'EPIPE', "the daemon's last word found its side of the splice gone");

    // A clean close: every byte reaches the daemon, then its end, and nothing fails.
    const cleanConn = nextConn();
    const clean = await upgraded(front);
    const sent = Buffer.concat([handshake, request(), randomBytes(64 * 1024)]);
    clean.wire.end(sent);
    const c2 = await cleanConn;
    await c2.closed;
    assert.equal(c2.bytes, sent.length, 'every byte reached the daemon');
    assert.equal(c2.error, null);
    clean.client.destroy();
  } finally {
    front.close();
    daemon.close();
    await rm(dir, { recursive: true, force: true });
  }
});

import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NbdClient } from '../../../src/nbd/nbd-client.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import {
  NBD_CLIENT_FLAG,
  NBD_CMD,
  NBD_MAGIC,
  NBD_OPT,
  NBD_REP,
  encodeClientFlags,
  encodeOption,
  encodeRequestHeader,
} from '../../../src/nbd/nbd-protocol.js';
import {
  NbdBackendError,
  serveNbd,
  type NbdExportBackend,
  type NbdServerConnection,
  type NbdWriteFlags,
} from '../../../src/nbd/nbd-server.js';

/** An export in memory that records every call, in the order the server made them. */
class MemoryBackend implements NbdExportBackend {
  readonly data: Buffer;
  readonly calls: string[] = [];
  readonly readOnly: boolean;
  /** Writes wait for this before they settle (a backend slower than the client). */
  gate: Promise<void> = Promise.resolve();
  constructor(size: number, readOnly = false) {
    this.data = Buffer.alloc(size);
    this.readOnly = readOnly;
  }
  get size(): number {
    return this.data.length;
  }
  read(offset: number, length: number): Promise<Buffer> {
    this.calls.push(`read ${offset}+${length}`);
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }
  async write(offset: number, data: Buffer, flags: NbdWriteFlags): Promise<void> {
    this.calls.push(`write ${offset}+${data.length}${flags.fua ? ' fua' : ''}`);
    data.copy(this.data, offset);
    await this.gate;
    if (offset === this.size - 1) throw new NbdBackendError('ENOSPC', 'the journal is full');
  }
  trim(offset: number, length: number): Promise<void> {
    this.calls.push(`trim ${offset}+${length}`);
    return Promise.resolve();
  }
  flush(): Promise<void> {
    this.calls.push('flush');
    return Promise.resolve();
  }
}

describe('NbdServerConnection (mamori as an NBD server)', () => {
  let dir: string;
  let server: Server;
  let sock: string;
  const exports = new Map<string, NbdExportBackend>();
  const connections: NbdServerConnection[] = [];
  const errors: string[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-nbd-server-'));
    sock = join(dir, 'nbd.sock');
    server = createServer((s) =>
      connections.push(
        serveNbd(s, {
          exports,
          onError: (e) => errors.push(e.message),
          maxRequestBytes: 1 << 20,
          maxBytesInFlight: 2 << 20,
        }),
      ),
    );
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  after(async () => {
    for (const c of connections) c.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('serves reads, writes, zeroes, trim and flush to an NBD client, calling the backend in arrival order', async () => {
    const disk = new MemoryBackend(1 << 20);
    exports.set('disk', disk);
    const c = await NbdClient.connect({ socketPath: sock }, { exportName: 'disk' });
    try {
      assert.equal(c.size, 1 << 20);
      assert.equal(c.transmissionFlags.canFlush, true);
      assert.equal(c.transmissionFlags.canTrim, true);
      assert.equal(c.transmissionFlags.readOnly, false);
      // Three writes sent at once: the backend sees them in the order they were sent.
      await Promise.all([
        c.write(0, Buffer.alloc(4096, 0x11)),
        c.write(4096, Buffer.alloc(4096, 0x22), { fua: true }),
        c.write(2048, Buffer.alloc(4096, 0x33)),
      ]);
      assert.deepEqual(disk.calls, ['write 0+4096', 'write 4096+4096 fua', 'write 2048+4096']);
      const back = await c.read(0, 8192);
      assert.equal(
        back.subarray(0, 2048).every((b) => b === 0x11),
        true,
      );
      assert.equal(
        back.subarray(2048, 6144).every((b) => b === 0x33),
        true,
      );
      assert.equal(
        back.subarray(6144).every((b) => b === 0x22),
        true,
      );
      await c.writeZeroes(0, 1024);
      assert.equal(
        (await c.read(0, 1024)).every((b) => b === 0),
        true,
        'zeroes without writeZeroes: written as zeros',
      );
      await c.trim(65536, 4096);
      await c.flush();
      assert.deepEqual(disk.calls.slice(3), ['read 0+8192', 'write 0+1024', 'read 0+1024', 'trim 65536+4096', 'flush']);
    } finally {
      await c.disconnect();
    }
  });

  it('answers a bad request with its errno and keeps serving', async () => {
    const disk = new MemoryBackend(1 << 20);
    exports.set('errors', disk);
    exports.set('ro', new MemoryBackend(4096, true));
    const c = await NbdClient.connect({ socketPath: sock }, { exportName: 'errors' });
    try {
      await assert.rejects(c.write((1 << 20) - 1, Buffer.alloc(1)), (e: unknown) =>
        isMamoriError(e) ? /ENOSPC/.test(e.message) : false,
      );
      // Still serving after the error.
      await c.write(0, Buffer.from('ok'));
      assert.equal((await c.read(0, 2)).toString(), 'ok');
    } finally {
      await c.disconnect();
    }
    const ro = await NbdClient.connect({ socketPath: sock }, { exportName: 'ro' });
    try {
      assert.equal(ro.transmissionFlags.readOnly, true);
      assert.equal((await ro.read(0, 16)).length, 16);
    } finally {
      await ro.disconnect();
    }
  });

  it('refuses an unknown export, lists its exports, and drops a client that breaks the protocol', async () => {
    await assert.rejects(NbdClient.connect({ socketPath: sock }, { exportName: 'ghost', timeoutMs: 5000 }), /ghost/);

    // LIST then ABORT, by hand: the names come back, then the ACK, then the server closes.
    const raw = await rawClient(sock);
    raw.socket.write(encodeClientFlags(NBD_CLIENT_FLAG.C_FIXED_NEWSTYLE | NBD_CLIENT_FLAG.C_NO_ZEROES));
    raw.socket.write(encodeOption(NBD_OPT.LIST));
    raw.socket.write(encodeOption(NBD_OPT.ABORT));
    const bytes = await raw.untilClosed;
    const replies = optionReplies(bytes.subarray(18));
    assert.deepEqual(
      replies.map((r) => [r.type, r.type === NBD_REP.SERVER ? r.data.subarray(4).toString() : '']),
      [...[...exports.keys()].map((n) => [NBD_REP.SERVER, n]), [NBD_REP.ACK, ''], [NBD_REP.ACK, '']],
    );

    // A request with a bad magic once an export is chosen: the connection is dropped, the error reported.
    const chosen = await rawClient(sock);
    chosen.socket.write(encodeClientFlags(NBD_CLIENT_FLAG.C_FIXED_NEWSTYLE | NBD_CLIENT_FLAG.C_NO_ZEROES));
    chosen.socket.write(encodeOption(NBD_OPT.EXPORT_NAME, Buffer.from('disk')));
    const bad = encodeRequestHeader({ flags: 0, type: NBD_CMD.READ, cookie: 1n, offset: 0, length: 1 });
    bad.writeUInt32BE(0xdeadbeef, 0);
    chosen.socket.write(bad);
    const answered = await chosen.untilClosed;
    assert.equal(answered.length, 18 + 10, "the greeting and the export's size and flags, then nothing");
    assert.match(errors.at(-1)!, /bad request magic/);

    // Garbage where an option should be.
    const hostile = await rawClient(sock);
    hostile.socket.write(encodeClientFlags(NBD_CLIENT_FLAG.C_FIXED_NEWSTYLE));
    hostile.socket.write(Buffer.from('not an option header at all'));
    await hostile.untilClosed;
    assert.match(errors.at(-1)!, /bad option magic/);
  });

  it('takes no more requests while a slow backend holds its limit of writes, and answers them all', async () => {
    const slow = new MemoryBackend(8 << 20);
    let open!: () => void;
    slow.gate = new Promise((resolve) => (open = resolve));
    exports.set('slow', slow);
    const c = await NbdClient.connect({ socketPath: sock }, { exportName: 'slow' });
    try {
      const writes = Array.from({ length: 8 }, (_, i) => c.write(i << 20, Buffer.alloc(1 << 20, i + 1)));
      // 2 MiB may be held: the third write passes the limit, and the server takes no fourth.
      await waitFor(() => slow.calls.length >= 3);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(slow.calls.length, 3, 'held at the limit while the backend is stuck');
      open();
      await Promise.all(writes);
      assert.equal(slow.calls.length, 8);
      const back = await c.read(7 << 20, 1 << 20);
      assert.equal(
        back.every((b) => b === 8),
        true,
      );
    } finally {
      await c.disconnect();
    }
  });
});

async function rawClient(path: string): Promise<{ socket: Socket; untilClosed: Promise<Buffer> }> {
  const socket = createConnection({ path });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const untilClosed = new Promise<Buffer>((resolve) => socket.on('close', () => resolve(Buffer.concat(chunks))));
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  return { socket, untilClosed };
}

function optionReplies(b: Buffer): { type: number; data: Buffer }[] {
  const out: { type: number; data: Buffer }[] = [];
  for (let at = 0; at + 20 <= b.length;) {
    assert.equal(b.readBigUInt64BE(at), NBD_MAGIC.OPTION_REPLY);
    const length = b.readUInt32BE(at + 16);
    out.push({ type: b.readUInt32BE(at + 12), data: b.subarray(at + 20, at + 20 + length) });
    at += 20 + length;
  }
  return out;
}

async function waitFor(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

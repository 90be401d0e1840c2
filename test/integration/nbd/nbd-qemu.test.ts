import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { createServer, createConnection } from 'node:net';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { allocatedExtents, copyExtents, dirtyExtents } from '../../../src/nbd/extent-copy.js';
import { NbdClient } from '../../../src/nbd/nbd-client.js';
import { NBD_STATE } from '../../../src/nbd/nbd-protocol.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

interface Daemon {
  pid: number;
  stop(): Promise<void>;
}

/** Starts a server process (argument array), waits for its unix socket; stop() kills it by its own pid. */
async function startDaemon(file: string, args: string[], socketPath: string): Promise<Daemon> {
  const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  let gone = false;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      gone = true;
      resolve();
    }),
  );
  const stop = async (): Promise<void> => {
    if (gone) return;
    child.kill('SIGTERM');
    await Promise.race([exited, delay(5000)]);
    if (!gone) child.kill('SIGKILL');
    await exited;
  };
  const deadline = Date.now() + 10_000;
  while (
    !(await stat(socketPath).then(
      (s) => s.isSocket(),
      () => false,
    ))
  ) {
    if (gone) throw new Error(`${file} exited before listening: ${stderr}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${file} did not listen on ${socketPath} within 10 s: ${stderr}`);
    }
    await delay(20);
  }
  return { pid: child.pid!, stop };
}

function qemuNbd(dir: string, image: string, extra: string[]): Promise<Daemon & { sock: string }> {
  const sock = join(dir, `qemu-nbd-${Date.now()}.sock`);
  return startDaemon(
    'qemu-nbd',
    ['--persistent', '--shared=4', '-k', sock, '-f', 'qcow2', '-x', 'disk', ...extra, image],
    sock,
  ).then((d) => Object.assign(d, { sock }));
}

function storageDaemon(dir: string, image: string, name: string): Promise<Daemon & { sock: string }> {
  const sock = join(dir, `${name}.sock`);
  return startDaemon(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=file,filename=${image},node-name=f,discard=unmap`,
      '--blockdev',
      'driver=qcow2,file=f,node-name=q,discard=unmap',
      '--nbd-server',
      `addr.type=unix,addr.path=${sock}`,
      '--export',
      'type=nbd,id=e,node-name=q,name=disk,writable=on',
    ],
    sock,
  ).then((d) => Object.assign(d, { sock }));
}

const qemuImg = (...args: string[]): Promise<string> =>
  runProcess('qemu-img', args, { timeoutMs: 30_000 }).then((r) => r.stdout);
const qemuIo = (image: string, ...cmds: string[]): Promise<unknown> =>
  runProcess('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), image], { timeoutMs: 30_000 });

/** Ranges qemu-img map reports with the given `data` value, merged. */
async function mapRanges(args: string[], data: boolean): Promise<Array<{ offset: number; length: number }>> {
  const entries = JSON.parse(await qemuImg('map', '--output=json', ...args)) as Array<{
    start: number;
    length: number;
    data: boolean;
  }>;
  const out: Array<{ offset: number; length: number }> = [];
  for (const e of entries.filter((x) => x.data === data)) {
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === e.start) last.length += e.length;
    else out.push({ offset: e.start, length: e.length });
  }
  return out;
}

describe('NbdClient against real QEMU NBD servers', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-nbd-it-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads data written by qemu-io from qemu-nbd, holes as zeros', async () => {
    const img = join(dir, 'read.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '8M');
    await qemuIo(img, 'write -P 0x11 0 4k', 'write -P 0xab 1M 64k', 'write -P 0x5c 5M 4k');
    const d = await qemuNbd(dir, img, ['-r']);
    try {
      const c = await NbdClient.connect({ socketPath: d.sock }, { exportName: 'disk' });
      assert.equal(c.size, 8 * MiB);
      assert.equal(c.transmissionFlags.readOnly, true);
      assert.equal(c.structuredReplies, true);
      const expected = Buffer.alloc(8 * MiB);
      expected.fill(0x11, 0, 4 * KiB);
      expected.fill(0xab, MiB, MiB + 64 * KiB);
      expected.fill(0x5c, 5 * MiB, 5 * MiB + 4 * KiB);
      assert.ok((await c.read(0, 8 * MiB)).equals(expected));
      assert.deepEqual(await c.read(MiB - 512, 1024), Buffer.concat([Buffer.alloc(512), Buffer.alloc(512, 0xab)]));
      await c.disconnect();
    } finally {
      await d.stop();
    }
  });

  it('connects over TCP too', async () => {
    const img = join(dir, 'tcp.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '1M');
    await qemuIo(img, 'write -P 0x44 4k 4k');
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: p } = probe.address() as { port: number };
        probe.close(() => resolve(p));
      });
    });
    const child = spawn(
      'qemu-nbd',
      ['--persistent', '-b', '127.0.0.1', '-p', String(port), '-r', '-f', 'qcow2', '-x', 'disk', img],
      { stdio: 'ignore' },
    );
    const exited = new Promise((r) => child.once('exit', r));
    try {
      const listening = async (): Promise<boolean> =>
        new Promise((r) => {
          const s = createConnection({ host: '127.0.0.1', port }, () => {
            s.destroy();
            r(true);
          }).once('error', () => r(false));
        });
      for (let i = 0; i < 250 && !(await listening()); i++) await delay(20);
      const c = await NbdClient.connect({ host: '127.0.0.1', port }, { exportName: 'disk' });
      assert.deepEqual(await c.read(4 * KiB - 2, 4), Buffer.from([0, 0, 0x44, 0x44]));
      await c.disconnect();
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('lists base:allocation extents of a sparse qcow2 as qemu-img map does', async () => {
    const img = join(dir, 'sparse.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '16M');
    await qemuIo(img, 'write -P 1 0 64k', 'write -P 2 3M 200k', 'write -P 3 15M 1M');
    const d = await qemuNbd(dir, img, ['-r']);
    try {
      const c = await NbdClient.connect(
        { socketPath: d.sock },
        { exportName: 'disk', metaContexts: ['base:allocation'] },
      );
      const extents = await c.extents('base:allocation');
      assert.equal(
        extents.reduce((n, e) => n + e.length, 0),
        16 * MiB,
      );
      assert.ok(
        extents.every((e) => e.flags === 0 || e.flags === (NBD_STATE.HOLE | NBD_STATE.ZERO)),
        JSON.stringify(extents),
      );
      const allocated = await allocatedExtents(c);
      assert.deepEqual(allocated, await mapRanges(['-f', 'qcow2', '-U', img], true));
      assert.deepEqual(allocated, [
        { offset: 0, length: 64 * KiB },
        { offset: 3 * MiB, length: 256 * KiB },
        { offset: 15 * MiB, length: MiB },
      ]);
      await c.disconnect();
    } finally {
      await d.stop();
    }
  });

  it('lists qemu:dirty-bitmap extents: only what was written while the bitmap was enabled', async () => {
    const img = join(dir, 'bitmap.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '4M');
    await qemuIo(img, 'write -P 0x22 0 64k');
    await qemuImg('bitmap', '--add', img, 'b0');
    await qemuIo(img, 'write -P 0xab 1M 64k');
    const d = await qemuNbd(dir, img, ['-r', '-B', 'b0']);
    try {
      const c = await NbdClient.connect(
        { socketPath: d.sock },
        { exportName: 'disk', metaContexts: ['base:allocation', 'qemu:dirty-bitmap:b0'] },
      );
      assert.deepEqual([...c.metaContextIds.keys()].sort(), ['base:allocation', 'qemu:dirty-bitmap:b0']);
      assert.deepEqual(await dirtyExtents(c, 'qemu:dirty-bitmap:b0'), [{ offset: MiB, length: 64 * KiB }]);
      assert.deepEqual(await allocatedExtents(c), [
        { offset: 0, length: 64 * KiB },
        { offset: MiB, length: 64 * KiB },
      ]);
      // QEMU's own NBD client agrees (it shows dirty areas as "data": false)
      const opts = `driver=nbd,server.type=unix,server.path=${d.sock},export=disk,x-dirty-bitmap=qemu:dirty-bitmap:b0`;
      assert.deepEqual(await mapRanges(['--image-opts', opts], false), [{ offset: MiB, length: 64 * KiB }]);
      await c.disconnect();
    } finally {
      await d.stop();
    }
  });

  it('writes through qemu-storage-daemon; qemu-img compare agrees with the expected bytes', async () => {
    const img = join(dir, 'write.qcow2');
    const raw = join(dir, 'expected.raw');
    await qemuImg('create', '-f', 'qcow2', img, '16M');
    const expected = Buffer.alloc(16 * MiB);
    const d = await storageDaemon(dir, img, 'write');
    try {
      const c = await NbdClient.connect({ socketPath: d.sock }, { exportName: 'disk' });
      assert.equal(c.transmissionFlags.readOnly, false);
      const writes: Array<[number, Buffer]> = [
        [0, Buffer.alloc(64 * KiB, 0x31)],
        [3 * MiB + 512, Buffer.alloc(8 * KiB + 512, 0x32)],
        [9 * MiB, Buffer.from(Array.from({ length: 3 * MiB }, (_, i) => (i * 13) & 0xff))],
      ];
      await Promise.all(writes.map(([at, data]) => c.write(at, data, { fua: at === 0 })));
      for (const [at, data] of writes) data.copy(expected, at);
      await c.flush();
      assert.ok((await c.read(0, 16 * MiB)).equals(expected), 'reads back what was written');
      await c.disconnect();
    } finally {
      await d.stop();
    }
    await writeFile(raw, expected);
    await qemuImg('compare', '-f', 'qcow2', '-F', 'raw', img, raw);
  });

  it('WRITE_ZEROES zeroes (keeping allocation with NO_HOLE) and TRIM discards', async () => {
    const img = join(dir, 'zero.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '8M');
    const d = await storageDaemon(dir, img, 'zero');
    try {
      const c = await NbdClient.connect(
        { socketPath: d.sock },
        { exportName: 'disk', metaContexts: ['base:allocation'] },
      );
      const f = c.transmissionFlags;
      assert.ok(f.canWriteZeroes && f.canTrim && f.canFlush && f.canFua, JSON.stringify(f));
      await c.write(0, Buffer.alloc(4 * MiB, 0x77));
      await c.writeZeroes(MiB, MiB);
      await c.writeZeroes(2 * MiB, 512 * KiB, { noHole: true, fua: true });
      await c.trim(3 * MiB, MiB);
      await c.flush();
      assert.ok((await c.read(MiB, 1536 * KiB)).equals(Buffer.alloc(1536 * KiB)), 'zeroed ranges read as zeros');
      assert.ok(
        (await c.read(2 * MiB + 512 * KiB, 512 * KiB)).equals(Buffer.alloc(512 * KiB, 0x77)),
        'neighbours untouched',
      );
      const at = async (offset: number): Promise<number> =>
        (await c.blockStatus(offset, 64 * KiB, 'base:allocation'))[0]!.flags;
      assert.equal(await at(0), 0, 'data');
      assert.equal(await at(MiB), NBD_STATE.HOLE | NBD_STATE.ZERO, 'WRITE_ZEROES reads as zero');
      assert.equal(await at(3 * MiB), NBD_STATE.HOLE | NBD_STATE.ZERO, 'TRIM left a hole');
      await c.disconnect();
    } finally {
      await d.stop();
    }
    // QEMU reports allocated zero clusters as holes too; the host offset in qemu-img map tells them apart
    const map = JSON.parse(await qemuImg('map', '--output=json', '-f', 'qcow2', img)) as Array<{
      start: number;
      zero: boolean;
      offset?: number;
    }>;
    const entry = (start: number): { zero: boolean; offset?: number } => map.find((e) => e.start === start)!;
    assert.ok(entry(MiB).zero && entry(MiB).offset === undefined, 'plain WRITE_ZEROES let QEMU unmap the clusters');
    assert.ok(entry(2 * MiB).zero && entry(2 * MiB).offset !== undefined, 'NO_HOLE kept them allocated');
  });

  it('copyExtents between two qemu-storage-daemon exports sends only the data', async () => {
    const src = join(dir, 'src.qcow2');
    const dst = join(dir, 'dst.qcow2');
    await qemuImg('create', '-f', 'qcow2', src, '64M');
    await qemuImg('create', '-f', 'qcow2', dst, '64M');
    const areas: Array<[number, number]> = [
      [0, MiB],
      [7 * MiB + 64 * KiB, 192 * KiB],
      [20 * MiB, 2560 * KiB],
      [63 * MiB, MiB],
    ];
    await qemuIo(
      src,
      ...areas.map(([at, len], i) => `write -P ${i + 1} ${at} ${len}`),
      `write -P 0 ${40 * MiB} ${MiB}`,
    );
    const dataBytes = areas.reduce((n, [, len]) => n + len, 0);
    const a = await storageDaemon(dir, src, 'src');
    const b = await storageDaemon(dir, dst, 'dst');
    try {
      const source = await NbdClient.connect(
        { socketPath: a.sock },
        { exportName: 'disk', metaContexts: ['base:allocation'] },
      );
      const target = await NbdClient.connect({ socketPath: b.sock }, { exportName: 'disk' });
      const extents = await allocatedExtents(source);
      const progress: number[] = [];
      const r = await copyExtents({ source, target, extents, onProgress: (p) => progress.push(p.bytesDone) });
      assert.equal(r.bytesWritten, dataBytes, 'WRITE payload is the data written, not the disk size');
      assert.equal(r.zeroBytes, MiB, 'the allocated all-zero area went as WRITE_ZEROES');
      assert.equal(r.bytesRead, dataBytes + MiB);
      assert.equal(progress.at(-1), dataBytes + MiB);
      await source.disconnect();
      await target.disconnect();
    } finally {
      await a.stop();
      await b.stop();
    }
    await qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', src, dst);
  });
});

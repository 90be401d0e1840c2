import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { JournalPointServer } from '../../../src/cdp/journal-point-server.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

/*
 * A continuous replica's disks at a point in time, served by JournalPointServer: the base point
 * is a real qcow2 chain (a point file over the replica's base, reached through its header) read
 * by a real qemu-storage-daemon, the journals are real segment files, and qemu-img reads each
 * served disk whole over NBD. What it reads is the base with every record up to the checkpoint
 * the time rounds down to, and nothing after.
 */
describe('journal point server', () => {
  let dir: string;
  const journals: WriteJournal[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-point-server-'));
  });
  after(async () => {
    for (const j of journals) await j.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function qemuIo(image: string, cmd: string): Promise<void> {
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', cmd, image], { timeoutMs: 60_000 });
  }

  /** A disk as qemu-img reads it from the server. */
  async function served(server: JournalPointServer, index: number, name: string): Promise<Buffer> {
    const out = join(dir, `${name}.raw`);
    await runProcess(
      'qemu-img',
      [
        'convert',
        '-f',
        'raw',
        '-O',
        'raw',
        `nbd+unix:///${JournalPointServer.exportName(index)}?socket=${server.socketPath}`,
        out,
      ],
      { timeoutMs: 120_000 },
    );
    return readFile(out);
  }

  it('serves every disk at the newest checkpoint all of them hold at or before the time asked', async () => {
    // Disk 0's base point: a point file over the replica's base (0x11 in the first MiB, 0x22 in the second).
    const base0 = join(dir, 'base0.qcow2');
    const point0 = join(dir, 'point0.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', base0, String(SIZE)], { timeoutMs: 30_000 });
    await qemuIo(base0, `write -P 0x11 0 ${MiB}`);
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base0, point0], {
      timeoutMs: 30_000,
    });
    await qemuIo(point0, `write -P 0x22 ${MiB} ${MiB}`);
    // Disk 1's base point: one image, 0x33 in its first MiB.
    const point1 = join(dir, 'point1.qcow2');
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', point1, String(SIZE)], { timeoutMs: 30_000 });
    await qemuIo(point1, `write -P 0x33 0 ${MiB}`);

    const j0 = await WriteJournal.open(join(dir, 'j0'));
    const j1 = await WriteJournal.open(join(dir, 'j1'));
    journals.push(j0, j1);
    const both = async (): Promise<number> => {
      const t = Math.max(Date.now() * 1000, j0.lastTimeUs, j1.lastTimeUs) + 1;
      await j0.appendCheckpoint(0, t);
      await j1.appendCheckpoint(0, t);
      return t;
    };
    const expected0 = Buffer.alloc(SIZE);
    expected0.fill(0x11, 0, MiB).fill(0x22, MiB, 2 * MiB);
    const expected1 = Buffer.alloc(SIZE);
    expected1.fill(0x33, 0, MiB);

    // First instant: a write over the base's part of disk 0 (half a cluster: the rest reads through), zeros on disk 1.
    await j0.appendWrite(512 * 1024, Buffer.alloc(4096, 0xa1));
    await j1.appendZero(0, 64 * 1024);
    const t1 = await both();
    const at1 = [Buffer.from(expected0), Buffer.from(expected1)];
    at1[0]!.fill(0xa1, 512 * 1024, 512 * 1024 + 4096);
    at1[1]!.fill(0, 0, 64 * 1024);
    // Second instant: a write across the two layers of disk 0's chain.
    await j0.appendWrite(MiB - 4096, Buffer.alloc(8192, 0xa2));
    const t2 = await both();
    const at2 = [Buffer.from(at1[0]!), Buffer.from(at1[1]!)];
    at2[0]!.fill(0xa2, MiB - 4096, MiB + 4096);
    // After it, writes and a checkpoint of disk 0 alone: not an instant of both disks.
    await j0.appendWrite(0, Buffer.alloc(4096, 0xa3));
    await j1.appendWrite(0, Buffer.alloc(4096, 0xa3));
    await j0.appendCheckpoint(0, Math.max(Date.now() * 1000, j0.lastTimeUs) + 1);

    await assert.rejects(
      JournalPointServer.start({
        dir: join(dir, 'early'),
        disks: [
          { index: 0, baseFile: point0, journal: j0.index },
          { index: 1, baseFile: point1, journal: j1.index },
        ],
        timeUs: t1 - 1,
      }),
      (e) => isMamoriError(e, 'NOT_FOUND') && /no point in time at or before/.test(e.message),
    );

    const cases: [string, number, number, Buffer[]][] = [
      ['at t1', t1, t1, at1],
      ['between t1 and t2', t2 - 1, t1, at1],
      ['after every checkpoint', Date.now() * 1000 + 60e6, t2, at2],
    ];
    for (const [what, asked, servedAt, expect] of cases) {
      const runtime = join(dir, `run-${servedAt}-${asked}`);
      const server = await JournalPointServer.start({
        dir: runtime,
        disks: [
          { index: 0, baseFile: point0, journal: j0.index },
          { index: 1, baseFile: point1, journal: j1.index },
        ],
        timeUs: asked,
      });
      try {
        assert.equal(server.timeUs, servedAt, `${what}: rounded down to the instant both disks hold`);
        for (const k of [0, 1]) {
          const got = await served(server, k, `${what.replace(/ /g, '-')}-${k}`);
          assert.equal(got.length, SIZE);
          assert.ok(got.equals(expect[k]!), `${what}: disk ${k} reads the base with the records up to the instant`);
        }
      } finally {
        await server.close();
      }
      // Closed: its daemon stopped (it removes its own socket and pid file) and its socket gone.
      const left = await readdir(runtime);
      assert.ok(!left.includes('point.sock') && !left.includes('daemon.pid'), `${what}: left ${left.join(', ')}`);
    }
    // One disk served, the instant chosen among all of them (a verifier of disk 0): disk 0's own
    // later checkpoint is not an instant of the VM.
    const one = await JournalPointServer.start({
      dir: join(dir, 'run-disk0-only'),
      disks: [{ index: 0, baseFile: point0, journal: j0.index }],
      timeUs: Date.now() * 1000 + 60e6,
      instantOf: [j0.index, j1.index],
    });
    try {
      assert.equal(one.timeUs, t2, 'the newest instant both disks hold, not disk 0 alone');
      assert.ok((await served(one, 0, 'disk0-only')).equals(at2[0]!));
    } finally {
      await one.close();
    }
  });
});

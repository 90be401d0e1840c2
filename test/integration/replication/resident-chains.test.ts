import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ReplicaCycleServer } from '../../../src/replication/replica-cycle-server.js';
import { ReplicaChain } from '../../../src/replication/replica-chain.js';
import { chainImageSpec, offlineMerge } from '../../../src/replication/chain-images.js';
import { NbdClient } from '../../../src/nbd/nbd-client.js';
import { runProcess } from '../../../src/core/run-process.js';

/*
 * Replica chains kept open in the real staging daemon from one cycle to the next
 * (resident-chains.ts): retention merges in the daemon with block-commit, and every point reads,
 * byte for byte, what a model of the writes says, through a seed, partial clusters included; a
 * withdrawn point and a released chain are opened again; a daemon killed in the middle of a
 * merge loses nothing, and the next retention finishes the merge.
 */
const MiB = 1024 * 1024;
const log = pino({ level: 'silent' });

interface Site {
  dir: string;
  cycles: ReplicaCycleServer;
  chain: ReplicaChain;
  /** What every point must read: the model after each committed cycle, by point id. */
  expected: Map<string, Buffer>;
  model: Buffer;
}

async function site(seedByte: number | null, size = 64 * MiB): Promise<Site> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-resident-'));
  const model = Buffer.alloc(size, seedByte ?? 0);
  const seed = join(dir, 'seed.raw');
  if (seedByte !== null) await writeFile(seed, model);
  const chain = await ReplicaChain.create(join(dir, 'replicas', 'r1', 'disk0'), {
    virtualSize: size,
    ...(seedByte !== null ? { seed: [{ file: seed, format: 'raw' as const }] } : {}),
  });
  const cycles = new ReplicaCycleServer({ root: join(dir, 'replicas'), stagingDir: join(dir, 'staging'), log });
  return { dir, cycles, chain, expected: new Map(), model };
}

/** One cycle writing `writes` (offset, length, byte), committed; the model follows. */
async function cycle(s: Site, writes: [number, number, number][]): Promise<string> {
  const target = await s.cycles.serve('r1', [s.chain]);
  const st = s.cycles.stream('r1', target.cycleId, 0);
  const nbd = await NbdClient.connect({ socketPath: st.socketPath }, { exportName: st.exportName });
  for (const [offset, length, byte] of writes) {
    await nbd.write(offset, Buffer.alloc(length, byte));
    s.model.fill(byte, offset, offset + length);
  }
  await nbd.flush();
  await nbd.disconnect();
  const [chain] = await s.cycles.end('r1', target.cycleId);
  const p = await chain!.commitCycle(
    { time: new Date().toISOString(), consistency: 'crash' },
    { closedByDaemon: true },
  );
  s.expected.set(p.id, Buffer.from(s.model));
  return p.id;
}

/** Every listed point reads what the model said when it was committed (read by qemu-img through its explicit chain). */
async function assertPointsRead(s: Site): Promise<void> {
  for (const p of s.chain.points()) {
    const out = join(s.dir, 'read.raw');
    await runProcess('qemu-img', ['convert', '-U', '-O', 'raw', chainImageSpec(p.layers), out]);
    const got = await readFile(out);
    await rm(out);
    const want = s.expected.get(p.id)!;
    assert.ok(got.equals(want), `point ${p.id} reads as it was committed`);
  }
}

/** The files (by name) a process holds open, with whether it may write them. */
async function openFiles(pid: number, under: string): Promise<Map<string, 'r' | 'rw'>> {
  const out = new Map<string, 'r' | 'rw'>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (!target.startsWith(under)) continue;
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
    const flags = parseInt(/^flags:\s+([0-7]+)/m.exec(info)?.[1] ?? '0', 8);
    out.set(target.slice(under.length + 1), (flags & 3) === 0 ? 'r' : 'rw');
  }
  return out;
}

const daemonPid = async (s: Site): Promise<number> =>
  Number((await readFile(join(s.dir, 'staging', 'sd.pid'), 'utf8')).trim());

test('a chain stays open in the staging daemon across cycles; retention merges there; every point reads as committed', async () => {
  const s = await site(0x5a);
  try {
    const disk = join(s.dir, 'replicas', 'r1', 'disk0');
    // Partial clusters (the site's qcow2 has 128 KiB clusters of 4 KiB subclusters): a merge
    // must keep the seed's bytes around each write.
    for (let k = 0; k < 8; k++) {
      await cycle(s, [
        [k * MiB + 4096 * k, 4096, 0x10 + k],
        [20 * MiB + 512 * 1024, 64 * 1024 + 4096 * k, 0x40 + k],
        [(30 + k) * MiB, MiB, 0x60 + k],
      ]);
      const pid = await daemonPid(s);
      const before = await openFiles(pid, disk);
      const merged = await s.chain.applyRetention(3, s.cycles.pointMerge);
      assert.equal(merged.deferred, false);
      const open = await openFiles(pid, disk);
      // Between cycles the daemon holds the base and the points, read-only: the next cycle opens
      // only the point this one made (a merge may have opened it already). A merged point is
      // closed (its file is deleted).
      const listed = ['base.qcow2', ...s.chain.points().map((p) => p.file.slice(disk.length + 1))];
      for (const f of listed.slice(0, -1)) assert.ok(open.has(f), `cycle ${k}: the daemon holds ${f}`);
      for (const f of open.keys()) assert.ok(listed.includes(f), `cycle ${k}: the daemon holds ${f}, not in the chain`);
      assert.ok(
        [...open.values()].every((m) => m === 'r'),
        'held read-only between merges',
      );
      if (merged.merged.length > 0) assert.ok(before.size > open.size, 'the merged point was closed');
      assert.equal(await daemonPid(s), pid, 'one daemon');
    }
    assert.equal(s.chain.points().length, 3);
    await assertPointsRead(s);
    const oldest = s.chain.points()[0]!;
    const info = JSON.parse((await runProcess('qemu-img', ['info', '-U', '--output=json', oldest.file])).stdout) as {
      'backing-filename'?: string;
    };
    assert.equal(info['backing-filename'], 'base.qcow2', 'the oldest point names the base in its header');

    // A withdrawn point: the daemon still has it open; the next cycle opens the chain without it.
    const newest = s.chain.newestPoint()!;
    await s.chain.withdrawNewestPoint(newest.id);
    s.expected.delete(newest.id);
    s.model = Buffer.from(s.expected.get(s.chain.newestPoint()!.id)!);
    await cycle(s, [[5 * MiB, 8192, 0x77]]);
    const held = await openFiles(await daemonPid(s), disk);
    assert.equal(held.has(newest.file.slice(disk.length + 1)), false, 'the withdrawn point was closed');

    // Released, the chain may be written by another process (qemu-img here), then opened again.
    await s.cycles.release('r1');
    assert.equal((await openFiles(await daemonPid(s), disk)).size, 0, 'released: nothing of the chain open');
    assert.deepEqual((await s.chain.applyRetention(2, offlineMerge)).merged.length, 1);
    await cycle(s, [[6 * MiB, 4096, 0x78]]);
    await s.chain.applyRetention(2, s.cycles.pointMerge);
    await assertPointsRead(s);
    await runProcess('qemu-img', ['check', '-U', '-q', join(disk, 'base.qcow2')]);
  } finally {
    await s.cycles.shutdown();
    await rm(s.dir, { recursive: true, force: true });
  }
});

test('the daemon killed in the middle of a merge: no point reads differently, and the next retention finishes it', async () => {
  const s = await site(null, 256 * MiB);
  try {
    const disk = join(s.dir, 'replicas', 'r1', 'disk0');
    // A point large enough that its merge is still running when it is seen writing the base.
    await cycle(s, [[0, 192 * MiB, 0x21]]);
    await cycle(s, [[MiB, 4096, 0x22]]);
    await cycle(s, [[2 * MiB, 4096, 0x23]]);
    const pid = await daemonPid(s);
    const merging = s.chain.applyRetention(2, s.cycles.pointMerge);
    merging.catch(() => undefined);
    // The merge has begun once the daemon holds the base writable.
    for (const deadline = Date.now() + 60_000; (await openFiles(pid, disk)).get('base.qcow2') !== 'rw';) {
      if (Date.now() > deadline) throw new Error('the daemon never opened the base writable for the merge');
      await new Promise((r) => setTimeout(r, 1));
    }
    process.kill(pid, 'SIGKILL');
    await assert.rejects(merging);
    assert.equal(s.chain.points().length, 3, 'the cut merge dropped no point');
    await assertPointsRead(s);
    // The next cycle starts a new daemon and opens the chain again; its retention merges it.
    await cycle(s, [[3 * MiB, 4096, 0x24]]);
    assert.notEqual(await daemonPid(s), pid);
    const done = await s.chain.applyRetention(2, s.cycles.pointMerge);
    assert.deepEqual(done.merged.length, 2);
    await assertPointsRead(s);
    const names = await readdir(disk);
    assert.deepEqual(
      names.filter((n) => n.endsWith('.qcow2')).sort(),
      ['base.qcow2', ...s.chain.points().map((p) => p.file.slice(disk.length + 1))].sort(),
      'the merged points are deleted',
    );
  } finally {
    await s.cycles.shutdown();
    await rm(s.dir, { recursive: true, force: true });
  }
});

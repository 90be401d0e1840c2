import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { StagingDaemon, type StagingDisk } from '../../../src/replication/staging-daemon.js';
import { assertCleanQcow2Header } from '../../../src/replication/chain-images.js';
import { NbdClient } from '../../../src/nbd/nbd-client.js';
import { runProcess } from '../../../src/core/run-process.js';
import { isStorageDaemon } from '../../../src/qemu/storage-daemon.js';

/*
 * The recovery site's one long-lived staging daemon (real qemu-storage-daemon): cycle after
 * cycle on one process, overlays made over QMP that qemu-img accepts as if it had made them,
 * several cycles open at once, a client cut by a hard close, and a daemon that died or was
 * left by a killed server replaced.
 */
const MiB = 1024 * 1024;
const log = pino({ level: 'silent' });

async function qcow2(file: string, backing?: string): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=131072,extended_l2=on'];
  if (backing) args.push('-b', backing, '-F', 'qcow2');
  await runProcess('qemu-img', [...args, file, String(64 * MiB)]);
}

async function pidOf(daemon: StagingDaemon): Promise<number> {
  return Number((await readFile(daemon.pidFile, 'utf8')).trim());
}

const O_DIRECT = 0o40000; // x86-64

/** The open flags of the file descriptor a process holds on `file` (its /proc fdinfo). */
async function openFlags(pid: number, file: string): Promise<number> {
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (target !== file) continue;
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    return parseInt(/^flags:\s+([0-7]+)/m.exec(info)![1]!, 8);
  }
  throw new Error(`process ${pid} does not hold ${file} open`);
}

async function write(socketPath: string, exportName: string, offset: number, byte: number): Promise<void> {
  const c = await NbdClient.connect({ socketPath }, { exportName });
  await c.write(offset, Buffer.alloc(MiB, byte));
  await c.flush();
  await c.disconnect();
}

test('cycles on one long-lived daemon: overlays made over QMP are sound, keep their data and backing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-staging-'));
  const daemon = new StagingDaemon({ dir: join(dir, 'sd'), log });
  try {
    await qcow2(join(dir, 'base.qcow2'));
    await qcow2(join(dir, 'p1.qcow2'), 'base.qcow2');
    // Data in each lower layer, read back through the exports: the chain opened in one piece.
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 5M 1M', join(dir, 'base.qcow2')]);
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 6M 1M', join(dir, 'p1.qcow2')]);
    const lower = [
      { file: join(dir, 'base.qcow2'), format: 'qcow2' as const },
      { file: join(dir, 'p1.qcow2'), format: 'qcow2' as const },
    ];
    const disk = (name: string): StagingDisk => ({
      key: dir,
      lower,
      staging: { file: join(dir, name), backing: { file: 'p1.qcow2', format: 'qcow2' }, sizeBytes: 64 * MiB },
    });
    const pids = new Set<number>();
    for (let k = 0; k < 3; k++) {
      const set = await daemon.open([disk(`st${k}.qcow2`)]);
      const pid = await pidOf(daemon);
      pids.add(pid);
      // The overlay is written past the page cache: the daemon holds it open with O_DIRECT.
      assert.equal((await openFlags(pid, join(dir, `st${k}.qcow2`))) & O_DIRECT, O_DIRECT, 'staging opened O_DIRECT');
      const reader = await NbdClient.connect({ socketPath: daemon.socketPath }, { exportName: set.exports[0]! });
      assert.ok((await reader.read(5 * MiB, MiB)).equals(Buffer.alloc(MiB, 0x33)), 'the base reads through');
      assert.ok((await reader.read(6 * MiB, MiB)).equals(Buffer.alloc(MiB, 0x44)), 'the point reads through');
      await reader.disconnect();
      await write(daemon.socketPath, set.exports[0]!, k * MiB, 0x10 + k);
      await daemon.close(set, 'safe');
      await assertCleanQcow2Header(join(dir, `st${k}.qcow2`));
      await runProcess('qemu-img', ['check', '-q', join(dir, `st${k}.qcow2`)]);
      const info = JSON.parse(
        (await runProcess('qemu-img', ['info', '--output=json', join(dir, `st${k}.qcow2`)])).stdout,
      ) as { 'backing-filename'?: string; 'backing-filename-format'?: string; 'cluster-size'?: number };
      assert.equal(info['backing-filename'], 'p1.qcow2');
      assert.equal(info['backing-filename-format'], 'qcow2');
      assert.equal(info['cluster-size'], 131072);
      // The data is in the overlay, read through its chain by another process.
      await runProcess('qemu-io', [
        '-r',
        '-f',
        'qcow2',
        '-c',
        `read -P ${0x10 + k} ${k * MiB} 1M`,
        join(dir, `st${k}.qcow2`),
      ]);
    }
    assert.equal(pids.size, 1, 'one daemon served every cycle');
  } finally {
    await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('two cycles at once; a hard close cuts a client; a dead or leftover daemon is replaced', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-staging-'));
  const daemon = new StagingDaemon({ dir: join(dir, 'sd'), log });
  try {
    await qcow2(join(dir, 'a.qcow2'));
    await qcow2(join(dir, 'b.qcow2'));
    const on = (base: string, name: string): StagingDisk => ({
      key: join(dir, base),
      lower: [{ file: join(dir, base), format: 'qcow2' }],
      staging: { file: join(dir, name), backing: { file: base, format: 'qcow2' }, sizeBytes: 64 * MiB },
    });
    const one = await daemon.open([on('a.qcow2', 'sa.qcow2')]);
    const two = await daemon.open([on('b.qcow2', 'sb.qcow2')]);
    assert.notEqual(one.exports[0], two.exports[0]);
    await write(daemon.socketPath, one.exports[0]!, 0, 1);
    await write(daemon.socketPath, two.exports[0]!, 0, 2);
    // A client still connected (a cut cycle) is dropped by a hard close.
    const hanging = await NbdClient.connect({ socketPath: daemon.socketPath }, { exportName: one.exports[0]! });
    await daemon.close(one, 'hard');
    await assert.rejects(hanging.read(0, 4096));
    await daemon.close(two, 'safe');
    await runProcess('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 2 0 1M', join(dir, 'sb.qcow2')]);

    // The daemon dies: the next cycle gets a new one.
    const first = await pidOf(daemon);
    process.kill(first, 'SIGKILL');
    // Dead, not dying: a SIGKILLed process lingers a moment, and a cycle opened in that moment
    // fails with the daemon (its source keeps its bitmap); the one after it gets a new daemon.
    for (const deadline = Date.now() + 30_000; await isStorageDaemon(first, join(dir, 'sd', 'qmp.sock'));) {
      if (Date.now() > deadline) throw new Error(`the killed daemon ${first} is still there`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const three = await daemon.open([on('a.qcow2', 'sc.qcow2')]);
    const second = await pidOf(daemon);
    assert.notEqual(second, first);
    // A server killed with it open: the next server's start finds it by its pid file and kills it.
    const restarted = new StagingDaemon({ dir: join(dir, 'sd'), log });
    assert.equal(await restarted.killLeftover(), true);
    assert.equal(await isStorageDaemon(second, join(dir, 'sd', 'qmp.sock')), false);
    void three;
  } finally {
    await daemon.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});

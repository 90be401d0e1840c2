import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { snapshotLayer } from '../../harness/snapshot-layer.js';
import { SiteProcess } from '../../harness/site-process.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * A pool's replica of a snapshot whose layer is one whole qcow2 is that layer under a second
 * name (a hard link), not a copy: the pool costs only its desktops' bytes. The layer must then
 * never change under the desktops: deleting the master's snapshot (possible once the pool has
 * moved to another one while a desktop in use stays behind) gives the master a copy of its own
 * first when it is stopped, and is refused while it runs (its QEMU has the shared file open).
 * A snapshot whose layer has a backing file gets a flattened copy, as before.
 */
const MiB = 1024 * 1024;
let site: SiteProcess;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-linked-replica-'));
  site = await SiteProcess.create('site-lr');
  await site.start();
  await site.cliJson('vm', 'create', 'gold', '--test-guest', '--data-disk', '64M', '--memory', '96');
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** sha256 of the image's guest-visible bytes (the whole chain), read with -U. */
async function contentHash(image: string): Promise<string> {
  const out = join(dir, `read-${Date.now()}-${Math.random().toString(36).slice(2)}.raw`);
  await runProcess('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', image, out], { timeoutMs: 60_000 });
  const h = createHash('sha256')
    .update(await readFile(out))
    .digest('hex');
  await rm(out, { force: true });
  return h;
}

async function bytesAt(image: string, offset: number, length: number): Promise<Buffer> {
  const out = join(dir, `at-${Date.now()}.raw`);
  await runProcess('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', image, out], { timeoutMs: 60_000 });
  const b = (await readFile(out)).subarray(offset, offset + length);
  await rm(out, { force: true });
  return b;
}

test("a linked replica costs no copy; the master's snapshot delete copies the layer first when stopped and is refused while it runs", async () => {
  const gold = await site.cliJson<VmView>('vm', 'show', 'gold');
  const base = gold.disks[0]!.path;
  await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${16 * MiB} ${8 * MiB}`, base], {
    timeoutMs: 60_000,
  });
  const v1Hash = await contentHash(base);
  await site.cliJson('vm', 'snapshot', 'gold', 'v1');

  const made = await site.cliJson<Job>(
    'pool',
    'create',
    'lr',
    '--master',
    'gold',
    '--snapshot',
    'v1',
    '--size',
    '2',
    '--name',
    'lr-{n}',
  );
  assert.equal(made.state, 'succeeded', JSON.stringify(made.error));
  const pool = await site.cliJson<PoolView>('pool', 'show', 'lr');
  assert.equal(pool.replicas.length, 1);
  assert.equal(pool.replicas[0]!.linked, true, 'the v1 layer is one whole qcow2: linked, not copied');
  const replicaFile = join(site.dataDir, 'pools', 'default', 'replicas', 'lr');
  const osDisk = (await site.cliJson<VmView>('vm', 'show', 'lr-1')).disks.find((d) => d.name === 'lr-1-os0')!.path;
  const backing = (
    JSON.parse((await runProcess('qemu-img', ['info', '-U', '--output=json', osDisk])).stdout) as {
      'full-backing-filename': string;
    }
  )['full-backing-filename'];
  assert.ok(backing.startsWith(replicaFile), `the desktop reads the pool's replica: ${backing}`);
  assert.equal((await stat(backing)).ino, (await stat(base)).ino, "the replica is the master's layer itself");
  assert.equal(pool.storage.replicasSharedBytes, pool.replicas[0]!.sizeBytes);
  assert.ok(pool.replicas[0]!.sizeBytes >= 8 * MiB);
  assert.equal(
    pool.storage.usedBytes,
    pool.storage.desktopsBytes,
    `the pool holds only its desktops: ${JSON.stringify(pool.storage)}`,
  );
  assert.ok(pool.storage.usedBytes < 1 * MiB, JSON.stringify(pool.storage));
  assert.match((await site.cli('pool', 'show', 'lr')).stdout, /linked/);

  // v2: the master writes over the same bytes after v1 (into the overlay v1 made); its layer has a backing file: a flattened copy.
  const activeAfterV1 = await snapshotLayer(site, gold.disks[0]!, 'v1');
  await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x77 ${16 * MiB} ${8 * MiB}`, activeAfterV1], {
    timeoutMs: 60_000,
  });
  await site.cliJson('vm', 'snapshot', 'gold', 'v2');
  // lr-1 runs with a session: in use, recompose leaves it on the v1 replica.
  await site.cliJson('vm', 'start', 'lr-1');
  await site.cliJson('pool', 'session-start', 'lr', 'lr-1', 'alice');
  const recomposed = await site.cliJson<Job & { result: { recomposed: number; skipped: string[] } }>(
    'pool',
    'recompose',
    'lr',
    '--snapshot',
    'v2',
  );
  assert.deepEqual([recomposed.result.recomposed, recomposed.result.skipped], [1, ['lr-1']]);
  const two = await site.cliJson<PoolView>('pool', 'show', 'lr');
  assert.deepEqual(two.replicas.map((r) => [r.snapshot, r.linked]).sort(), [
    ['v1', true],
    ['v2', false],
  ]);

  // Running, the master's QEMU would commit into the shared file: refused, nothing changed.
  await site.cliJson('vm', 'start', 'gold');
  const refused = await site.cli('vm', 'snapshot', 'delete', 'gold', 'v1');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /also a desktop pool's replica.*stop VM gold.*\[LAYER_SHARED\]/);
  assert.deepEqual(
    (await site.cliJson<{ name: string }[]>('vm', 'snapshot', 'list', 'gold')).map((s) => s.name),
    ['v1', 'v2'],
  );
  assert.equal((await stat(base)).nlink, 2, 'the layer is still shared');

  // Stopped: the master gets its own copy of the layer, then the overlay is committed into that.
  await site.cliJson('vm', 'kill', 'gold');
  await site.cliJson('vm', 'snapshot', 'delete', 'gold', 'v1');
  assert.deepEqual(
    (await site.cliJson<{ name: string }[]>('vm', 'snapshot', 'list', 'gold')).map((s) => s.name),
    ['v2'],
  );
  assert.notEqual((await stat(base)).ino, (await stat(backing)).ino, 'the master has a file of its own');
  assert.equal((await stat(backing)).nlink, 1);
  assert.equal(await contentHash(backing), v1Hash, 'the replica the running desktop reads is still v1, byte for byte');
  assert.deepEqual([...(await bytesAt(backing, 16 * MiB, 4))], [0x5a, 0x5a, 0x5a, 0x5a]);
  assert.deepEqual(
    [...(await bytesAt(base, 16 * MiB, 4))],
    [0x77, 0x77, 0x77, 0x77],
    "the master's base took v1's overlay",
  );
  const after1 = await site.cliJson<PoolView>('pool', 'show', 'lr');
  const v1 = after1.replicas.find((r) => r.snapshot === 'v1')!;
  assert.equal(v1.linked, false, 'the pool alone holds the v1 layer now');
  assert.equal(
    after1.storage.usedBytes,
    after1.storage.replicasBytes + after1.storage.desktopsBytes,
    "and it counts as the pool's own",
  );
  // The desktop runs on over the v1 replica: its guest comes up and speaks (a TCG boot takes
  // seconds; on a quick run everything above can finish first, so wait for it, do not sample).
  const serialLog = (await site.cliJson<VmView>('vm', 'show', 'lr-1')).serialLog;
  await site.waitFor(
    'lr-1 to run on and print from its guest',
    async () => (/wl_seq=|mamori-guest/.test(await readFile(serialLog, 'utf8')) ? true : undefined),
    120_000,
  );
  assert.equal((await site.cliJson<VmView>('vm', 'show', 'lr-1')).state, 'running');

  await site.cliJson('pool', 'session-end', 'lr', 'lr-1');
  await site.cliJson('vm', 'kill', 'lr-1');
  await site.cliJson('pool', 'delete', 'lr');
  assert.deepEqual((await stat(base)).nlink, 1);
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { snapshotLayer } from '../../harness/snapshot-layer.js';
import { SiteProcess } from '../../harness/site-process.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * Desktop pools with real parts: a master test guest whose disk holds 8 MiB, snapshotted;
 * a pool of 10 linked clones that all boot under TCG and print their own hostnames; a
 * refresh that drops what a desktop wrote to its OS disk but keeps its persistent disk;
 * licence activation that fails (with View Composer's message) or is skipped; bad input
 * refused before anything is made; and the master kept while a pool uses it.
 */
const MiB = 1024 * 1024;
let site: SiteProcess;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-pools-test-'));
  site = await SiteProcess.create('site-p');
  await site.start();
  await site.cliJson('vm', 'create', 'master', '--test-guest', '--data-disk', '64M', '--memory', '96');
  const master = await site.cliJson<VmView>('vm', 'show', 'master');
  // 8 MiB of the master's own data: what each full copy would repeat and the replica holds once.
  await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${16 * MiB} ${8 * MiB}`, master.disks[0]!.path], {
    timeoutMs: 60_000,
  });
  await site.cliJson('vm', 'snapshot', 'master', 'v1');
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function createPool(...args: string[]): Promise<Job> {
  const job = await site.cliJson<Job>('pool', 'create', ...args);
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  return job;
}

async function serialOf(vm: string): Promise<string> {
  return readFile((await site.cliJson<VmView>('vm', 'show', vm)).serialLog, 'utf8').catch(() => '');
}

async function desktopState(pool: string, name: string): Promise<PoolView['desktops'][number]> {
  const d = (await site.cliJson<PoolView>('pool', 'show', pool)).desktops.find((x) => x.name === name);
  assert.ok(d, `${name} is in ${pool}`);
  return d;
}

async function rawBytes(qcow2: string, length: number): Promise<Buffer> {
  const out = join(dir, `read-${Date.now()}.raw`);
  await runProcess('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', qcow2, out], { timeoutMs: 60_000 });
  const b = (await readFile(out)).subarray(0, length);
  await rm(out, { force: true });
  return b;
}

test('bad input is refused before anything is made', async () => {
  const bad = async (args: string[], re: RegExp): Promise<void> => {
    const r = await site.cli('pool', 'create', 'bad', '--master', 'master', ...args);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, re);
  };
  await bad(['--snapshot', 'nope', '--size', '2', '--name', 'b-{n}'], /has no snapshot nope.*\[SNAPSHOT_NOT_FOUND\]/);
  await bad(['--snapshot', 'v1', '--size', '2', '--name', 'desk'], /must hold \{n\} exactly once.*\[INVALID_INPUT\]/);
  await bad(['--snapshot', 'v1', '--size', '2', '--name', '{n}-{n}'], /must hold \{n\} exactly once/);
  await bad(
    ['--snapshot', 'v1', '--size', '3', '--name', 'b-{n}', '--persistent-disk', '100T'],
    /has .* free but 3 desktops need .*\[POOL_FULL\]/,
  );
  await site.cliJson('vm', 'create', 'taken-2', '--memory', '64');
  await bad(
    ['--snapshot', 'v1', '--size', '3', '--name', 'taken-{n}'],
    /gives taken-2, which an existing VM has.*\[VM_EXISTS\]/,
  );
  await site.cliJson('vm', 'delete', 'taken-2');
  assert.deepEqual(await site.cliJson('pool', 'list'), []);
  const pools = await readdir(join(site.dataDir, 'pools', 'default'));
  assert.ok(
    !pools.includes('replicas') || (await readdir(join(site.dataDir, 'pools', 'default', 'replicas'))).length === 0,
    'no replica was made',
  );
});

test('a 10-desktop pool: small clones, every desktop boots with its own hostname, refresh keeps only the persistent disk', async () => {
  await createPool(
    'office',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '10',
    '--name',
    'desk-{n:2}',
    '--persistent-disk',
    '16M',
    '--disposable-disk',
    '8M',
    // Marks the persistent disk (vdb: OS disk, persistent, disposable, identity) with the desktop's name.
    '--command',
    'printf "mamori-persistent %s\\n" "$(hostname)" | dd of=/dev/vdb bs=512 conv=notrunc,fsync 2>/dev/null',
    // ... and its disposable disk (vdc), which must not survive a power-off.
    '--command',
    'printf "mamori-disposable %s\\n" "$(hostname)" | dd of=/dev/vdc bs=512 conv=notrunc,fsync 2>/dev/null',
  );
  const pool = await site.cliJson<PoolView>('pool', 'show', 'office');
  assert.equal(pool.state, 'ready');
  assert.equal(pool.desktops.length, 10);
  assert.deepEqual(
    pool.desktops.map((d) => d.name),
    Array.from({ length: 10 }, (_, i) => `desk-${String(i + 1).padStart(2, '0')}`),
  );
  assert.equal(pool.replicas.length, 1);
  assert.ok(
    pool.replicas[0]!.sizeBytes >= 8 * MiB,
    `the replica holds the master's data: ${pool.replicas[0]!.sizeBytes}`,
  );
  for (const d of pool.desktops) {
    assert.equal(d.state, 'provisioned');
    assert.ok(d.ownBytes < 2 * MiB, `${d.name} holds ${d.ownBytes} bytes of its own before boot`);
  }
  assert.ok(pool.storage.savedBytes > 8 * 8 * MiB, `storage saved: ${JSON.stringify(pool.storage)}`);

  for (const d of pool.desktops) await site.cliJson('vm', 'start', d.name);
  for (const d of pool.desktops) {
    await site.waitFor(
      `${d.name} to be customized`,
      async () => (await desktopState('office', d.name)).state === 'ready',
      300_000,
    );
    assert.match(await serialOf(d.name), new RegExp(`^mamori-guest hostname ${d.name}$`, 'm'));
  }
  // A power-off replaces the disposable disk and keeps the persistent one.
  const vm02 = await site.cliJson<VmView>('vm', 'show', 'desk-02');
  const disposable02 = vm02.disks.find((x) => x.name === 'desk-02-disposable')!.path;
  const persistent02 = vm02.disks.find((x) => x.name === 'desk-02-persistent')!.path;
  assert.equal(
    (await rawBytes(disposable02, 26)).toString('latin1'),
    'mamori-disposable desk-02\n',
    'the desktop wrote its disposable disk',
  );
  await site.cliJson('vm', 'kill', 'desk-02');
  await site.waitFor(
    'the disposable disk to be replaced',
    async () => (await rawBytes(disposable02, 26)).equals(Buffer.alloc(26)),
    30_000,
  );
  assert.equal((await rawBytes(persistent02, 26)).toString('latin1'), 'mamori-persistent desk-02\n');
  // desk-01 has written its log to its OS disk and its name to its persistent disk.
  const vm = await site.cliJson<VmView>('vm', 'show', 'desk-01');
  await site.waitFor(
    'desk-01 to have written to its OS disk',
    async () => /wl_seq=([1-9]\d*)/.test(await serialOf('desk-01')),
    120_000,
  );
  await site.cliJson('pool', 'refresh', 'office', '--force');
  const os = vm.disks.find((x) => x.name === 'desk-01-os0')!.path;
  const persistent = vm.disks.find((x) => x.name === 'desk-01-persistent')!.path;
  const replica = (await runProcess('qemu-img', ['info', '--output=json', '-U', os])).stdout;
  const backing = (JSON.parse(replica) as { 'full-backing-filename': string })['full-backing-filename'];
  const cmp = await runProcess('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', os, backing], {
    timeoutMs: 60_000,
    okCodes: [0, 1],
  });
  assert.equal(cmp.code, 0, `after refresh the OS disk reads as the replica: ${cmp.stdout}`);
  assert.equal(
    (await rawBytes(persistent, 26)).toString('latin1'),
    'mamori-persistent desk-01\n',
    'the persistent disk kept what the desktop wrote',
  );
  assert.equal(
    (await desktopState('office', 'desk-01')).state,
    'provisioned',
    'a refreshed desktop is customized again at its next boot',
  );
  assert.ok((await desktopState('office', 'desk-01')).ownBytes < 2 * MiB);
  // desk-01's user data moves to desk-02, which hands its own to desk-01.
  const same = await site.cli('pool', 'move-persistent', 'office', '--from', 'desk-01', '--to', 'desk-01');
  assert.match(same.stderr, /give two different desktops \[INVALID_INPUT\]/);
  await site.cliJson('pool', 'move-persistent', 'office', '--from', 'desk-01', '--to', 'desk-02');
  assert.equal((await rawBytes(persistent02, 26)).toString('latin1'), 'mamori-persistent desk-01\n');
  assert.equal((await rawBytes(persistent, 26)).toString('latin1'), 'mamori-persistent desk-02\n');

  const snapDel = await site.cli('vm', 'snapshot', 'delete', 'master', 'v1');
  assert.match(snapDel.stderr, /snapshot v1 of master backs desktop pool office.*\[MASTER_IN_USE\]/);
  const del = await site.cli('vm', 'delete', 'master');
  assert.match(del.stderr, /master of desktop pool office: delete the pool first \[MASTER_IN_USE\]/);
  await site.cliJson('pool', 'delete', 'office');
  assert.deepEqual(await site.cliJson('pool', 'list'), []);
  const vms = await site.cliJson<VmView[]>('vm', 'list');
  assert.deepEqual(
    vms.map((v) => v.name).filter((n) => n.startsWith('desk-')),
    [],
  );
  assert.deepEqual(await readdir(join(site.dataDir, 'pools', 'default', 'desktops')), []);
  assert.deepEqual(await readdir(join(site.dataDir, 'pools', 'default', 'replicas')), []);
});

test('a failing licence activation marks the desktop with the cause and the remedy; --skip-license-activation comes up', async () => {
  await createPool(
    'lic',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '2',
    '--name',
    'lic-{n}',
    '--license-command',
    'echo cannot reach rhsm.example.com; exit 70',
  );
  await createPool(
    'slow',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '1',
    '--name',
    'slow-{n}',
    '--license-command',
    'sleep 60',
    '--license-timeout',
    '5',
  );
  await createPool(
    'lab',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '1',
    '--name',
    'lab-{n}',
    '--license-command',
    'echo cannot reach rhsm.example.com; exit 70',
    '--skip-license-activation',
  );
  for (const vm of ['lic-1', 'slow-1', 'lab-1']) await site.cliJson('vm', 'start', vm);
  const failed = await site.waitFor(
    'lic-1 to fail activation',
    async () => {
      const d = await desktopState('lic', 'lic-1');
      return d.state === 'customization-failed' ? d : null;
    },
    240_000,
  );
  assert.match(
    failed.message!,
    /^Failed to activate software license: the registration command failed \(exit-70\) after \d+ s: cannot reach rhsm\.example\.com/,
  );
  assert.match(
    failed.message!,
    /Check that the desktops reach the licensing server, or recreate the pool with --skip-license-activation/,
  );
  const slow = await site.waitFor(
    'slow-1 to time out',
    async () => {
      const d = await desktopState('slow', 'slow-1');
      return d.state === 'customization-failed' ? d : null;
    },
    240_000,
  );
  assert.match(
    slow.message!,
    /^Failed to activate software license: the registration command did not finish within 5 s/,
  );
  await site.waitFor(
    'lab-1 to be customized',
    async () => (await desktopState('lab', 'lab-1')).state === 'ready',
    240_000,
  );
  assert.doesNotMatch(await serialOf('lab-1'), /license/);
  for (const p of ['lic', 'slow', 'lab']) await site.cliJson('pool', 'delete', p);
});

test('recompose moves every desktop to the new snapshot (in-use ones when run again), resize grows and shrinks, rebalance spreads by free space', async () => {
  await createPool(
    'ops',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '3',
    '--name',
    'ops-{n}',
    '--persistent-disk',
    '16M',
  );
  // v2: the master changed after v1 (written into its active layer, the overlay v1 made).
  const master = await site.cliJson<VmView>('vm', 'show', 'master');
  const active = await snapshotLayer(site, master.disks[0]!, 'v1');
  await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x77 0 ${4 * MiB}`, active], { timeoutMs: 60_000 });
  await site.cliJson('vm', 'snapshot', 'master', 'v2');
  const same = await site.cli('pool', 'recompose', 'ops', '--snapshot', 'v1');
  assert.match(same.stderr, /already runs on snapshot v1.*\[INVALID_INPUT\]/);

  const persistent = (await site.cliJson<VmView>('vm', 'show', 'ops-1')).disks.find(
    (d) => d.name === 'ops-1-persistent',
  )!.path;
  await runProcess('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 64k', persistent], { timeoutMs: 60_000 });
  await site.cliJson('vm', 'start', 'ops-1');
  // In use is a session or an assignment, not powered on: alice's session keeps ops-1 as it is.
  await site.cliJson('pool', 'session-start', 'ops', 'ops-1', 'alice');
  const first = await site.cliJson<
    Job & { result: { recomposed: number; skipped: string[]; replicasRemoved: number } }
  >('pool', 'recompose', 'ops', '--snapshot', 'v2');
  assert.deepEqual(
    [first.result.recomposed, first.result.skipped, first.result.replicasRemoved],
    [2, ['ops-1'], 0],
    'the desktop in use is skipped and keeps the old replica',
  );
  assert.equal((await site.cliJson<PoolView>('pool', 'show', 'ops')).replicas.length, 2);
  await site.cliJson('pool', 'session-end', 'ops', 'ops-1');
  await site.cliJson('vm', 'kill', 'ops-1');
  const second = await site.cliJson<Job & { result: { recomposed: number; replicasRemoved: number } }>(
    'pool',
    'recompose',
    'ops',
    '--snapshot',
    'v2',
  );
  assert.deepEqual(
    [second.result.recomposed, second.result.replicasRemoved],
    [1, 1],
    'run again, it does only the desktop left behind, and the unused v1 replica goes',
  );
  const pool = await site.cliJson<PoolView>('pool', 'show', 'ops');
  assert.deepEqual(
    pool.replicas.map((r) => r.snapshot),
    ['v2'],
  );
  for (const d of pool.desktops) {
    const os = (await site.cliJson<VmView>('vm', 'show', d.name)).disks.find((x) => x.name === `${d.name}-os0`)!.path;
    // Every byte of the desktop's OS disk is the master's at v2 (its active layer at v2, with the chain below).
    const cmp = await runProcess('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', os, active], {
      timeoutMs: 60_000,
      okCodes: [0, 1],
    });
    assert.equal(cmp.code, 0, `${d.name} reads as v2: ${cmp.stdout}`);
  }
  assert.deepEqual(
    [...(await rawBytes(persistent, 4))],
    [0x42, 0x42, 0x42, 0x42],
    'the persistent disk went through recompose untouched',
  );

  const grown = await site.cliJson<Job & { result: { made: number } }>('pool', 'resize', 'ops', '--size', '5');
  assert.equal(grown.result.made, 2);
  assert.deepEqual(
    (await site.cliJson<PoolView>('pool', 'show', 'ops')).desktops.map((d) => d.name),
    ['ops-1', 'ops-2', 'ops-3', 'ops-4', 'ops-5'],
  );
  await site.cliJson('pool', 'resize', 'ops', '--size', '2');
  assert.deepEqual(
    (await site.cliJson<PoolView>('pool', 'show', 'ops')).desktops.map((d) => d.name),
    ['ops-1', 'ops-2'],
  );
  assert.deepEqual((await readdir(join(site.dataDir, 'pools', 'default', 'desktops', 'ops'))).sort(), [
    'ops-1',
    'ops-2',
  ]);

  const moved = await site.cliJson<Job & { result: { moved: string[] } }>(
    'pool',
    'rebalance',
    'ops',
    '--storage',
    'default,second',
  );
  assert.deepEqual(
    moved.result.moved,
    ['ops-2: default -> second'],
    'two pools with the same free space take one desktop each',
  );
  const spread = await site.cliJson<PoolView>('pool', 'show', 'ops');
  assert.deepEqual(
    spread.desktops.map((d) => [d.name, d.storage]),
    [
      ['ops-1', 'default'],
      ['ops-2', 'second'],
    ],
  );
  assert.deepEqual(spread.replicas.map((r) => r.storage).sort(), ['default', 'second']);
  const vm2 = await site.cliJson<VmView>('vm', 'show', 'ops-2');
  assert.ok(
    vm2.disks.every((d) => d.path.startsWith(join(site.dataDir, 'pools', 'second'))),
    JSON.stringify(vm2.disks),
  );
  await site.cliJson('vm', 'start', 'ops-2');
  await site.waitFor(
    'the moved desktop to come up customized',
    async () => (await desktopState('ops', 'ops-2')).state === 'ready',
    240_000,
  );
  await site.cliJson('pool', 'delete', 'ops');
});

test('deleting snapshots merges their layers: the data and the other snapshots stay', async () => {
  await site.cliJson('vm', 'create', 'snapper', '--data-disk', '16M', '--memory', '64');
  const vm = await site.cliJson<VmView>('vm', 'show', 'snapper');
  const base = vm.disks[0]!.path;
  const layers = {
    s1: await snapshotLayer(site, vm.disks[0]!, 's1'),
    s2: await snapshotLayer(site, vm.disks[0]!, 's2'),
  };
  const layer = (snap: 's1' | 's2'): string => layers[snap];
  const io = (file: string, cmd: string): Promise<unknown> =>
    runProcess('qemu-io', ['-f', 'qcow2', '-c', cmd, file], { timeoutMs: 60_000 });
  await io(base, `write -P 0x11 0 ${MiB}`);
  await site.cliJson('vm', 'snapshot', 'snapper', 's1');
  await io(layer('s1'), `write -P 0x22 ${MiB} ${MiB}`);
  await site.cliJson('vm', 'snapshot', 'snapper', 's2');
  await io(layer('s2'), `write -P 0x33 ${2 * MiB} ${MiB}`);
  const before = join(dir, 'snapper-before.raw');
  await runProcess('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', layer('s2'), before], { timeoutMs: 60_000 });

  await site.cliJson('vm', 'snapshot', 'delete', 'snapper', 's1');
  assert.deepEqual(
    (await site.cliJson<{ name: string }[]>('vm', 'snapshot', 'list', 'snapper')).map((x) => x.name),
    ['s2'],
  );
  assert.ok(!(await readdir(dirname(layer('s1')))).includes(basename(layer('s1'))), 'the merged overlay is gone');
  let cmp = await runProcess('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', layer('s2'), before], {
    timeoutMs: 60_000,
    okCodes: [0, 1],
  });
  assert.equal(cmp.code, 0, `the VM sees the same data: ${cmp.stdout}`);
  // s2 (the layer below its overlay: now the base) still holds A and B, not C.
  const s2 = await rawBytes(base, 3 * MiB);
  assert.deepEqual([s2[0], s2[MiB], s2[2 * MiB]], [0x11, 0x22, 0]);

  await site.cliJson('vm', 'snapshot', 'delete', 'snapper', 's2');
  assert.deepEqual(await site.cliJson('vm', 'snapshot', 'list', 'snapper'), []);
  cmp = await runProcess('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', base, before], {
    timeoutMs: 60_000,
    okCodes: [0, 1],
  });
  assert.equal(cmp.code, 0, `all merged into the base: ${cmp.stdout}`);
  const missing = await site.cli('vm', 'snapshot', 'delete', 'snapper', 's9');
  assert.match(missing.stderr, /has no snapshot s9.*\[SNAPSHOT_NOT_FOUND\]/);
  await site.cliJson('vm', 'delete', 'snapper');
});

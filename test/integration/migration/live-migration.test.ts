import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { LoopDevice } from '../../harness/loop-device.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { readFile } from 'node:fs/promises';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import { waitStreaming } from '../../harness/continuous-guest.js';

/*
 * Live migration between two sites in network namespaces, of a test guest writing its log:
 * disks mirrored over NBD+TLS, RAM over TLS, switchover, source QEMU gone; and a cancel
 * before switchover that leaves the VM running at the source and nothing at the destination.
 */
let sites: TwoSites;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
});
after(async () => {
  await sites?.destroy();
});

/** Running, and not a zombie waiting for its (re)parent to reap it. */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/**
 * Watches serial logs from the host (every 50 ms) and notes when each heartbeat line first
 * appears: the guest prints one a second, so the longest time between two is how long the
 * guest stopped, as seen from outside, whichever site it ran at.
 */
function watchHeartbeats(files: string[]): {
  seen(file: number): number;
  stop(): Promise<{ n: number; at: number; file: number }[]>;
} {
  const offsets = new Map<string, number>(files.map((f) => [f, 0]));
  const partial = new Map<string, string>();
  const seen: { n: number; at: number; file: number }[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      for (const [index, f] of files.entries()) {
        const fh = await open(f, 'r').catch(() => null);
        if (!fh) continue;
        try {
          const buf = Buffer.alloc(1 << 20);
          const { bytesRead } = await fh.read(buf, 0, buf.length, offsets.get(f)!);
          if (bytesRead === 0) continue;
          offsets.set(f, offsets.get(f)! + bytesRead);
          const text = (partial.get(f) ?? '') + buf.subarray(0, bytesRead).toString('latin1');
          const lines = text.split('\n');
          partial.set(f, lines.pop()!);
          const at = Date.now();
          for (const l of lines) {
            const m = /mamori-hb (\d+) /.exec(l);
            if (m) seen.push({ n: Number(m[1]), at, file: index });
          }
        } finally {
          await fh.close();
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    seen: (file) => seen.filter((b) => b.file === file).length,
    stop: async () => {
      stopped = true;
      await loop;
      return seen;
    },
  };
}

/** Stops the VM and checks its write log against what the guest acknowledged on its console. */
async function assertWriteLogWhole(which: 'a' | 'b', name: string): Promise<void> {
  const vm = await sites.cliJson<VmView>(which, 'vm', 'show', name);
  await sites.cliJson(which, 'vm', 'stop', name, '--timeout', '60');
  const acks = parseSerialAcks(await readFile(vm.serialLog, 'utf8'));
  const report = await sites.cliJson<{ consistent: boolean; lastSequence: number; tornCount: number }>(
    which,
    'verify-writelog',
    vm.disks[0]!.path,
  );
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.tornCount, 0);
  assert.ok(
    acks.length > 0 && report.lastSequence >= Math.max(...acks),
    `log holds ${report.lastSequence}, guest acknowledged ${Math.max(...acks)}`,
  );
}

async function bootWriting(name: string): Promise<VmView> {
  await a('vm', 'create', name, '--test-guest', '--data-disk', '32M', '--writelog-rate', '20');
  await a('vm', 'start', name);
  await sites.a.waitFor(
    `${name} heartbeat`,
    async () => (await a<VmView>('vm', 'show', name)).lastHeartbeatAt,
    180_000,
  );
  return a<VmView>('vm', 'show', name);
}

test('a stopped VM is refused; a cancel before switchover leaves the VM running at the source and nothing at the destination', async () => {
  await a('vm', 'create', 'idle', '--test-guest', '--data-disk', '16M');
  const r = await sites.cli('a', 'vm', 'migrate', 'idle', '--to', 'site-b');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /is stopped; live migration moves a running VM.*VM_INVALID_STATE/);
  await a('vm', 'delete', 'idle');

  const vm = await bootWriting('cx');
  // 1 MB/s: the RAM copy takes minutes, so the cancel lands before switchover.
  const job = await a<Job>('vm', 'migrate', 'cx', '--to', 'site-b', '--bandwidth', '1', '--no-wait');
  await sites.a.waitFor(
    'the migration under way',
    async () => {
      const j = await a<Job>('job', 'show', job.id);
      return j.steps.some((s) => s.name === 'migrate' && s.state === 'running') ? j : undefined;
    },
    180_000,
  );
  assert.equal((await b<VmView>('vm', 'show', 'cx')).state, 'incoming');
  await a('vm', 'migrate-cancel', 'cx');
  const ended = await sites.a.waitFor(
    'the job to end',
    async () => {
      const j = await a<Job>('job', 'show', job.id);
      return j.state !== 'running' ? j : undefined;
    },
    120_000,
  );
  assert.equal(ended.state, 'failed');
  assert.match(ended.error!.message, /cancelled/);
  const after = await a<VmView>('vm', 'show', 'cx');
  assert.equal(after.state, 'running');
  const hb = after.lastHeartbeatAt;
  await sites.a.waitFor(
    'heartbeats go on at the source',
    async () => (await a<VmView>('vm', 'show', 'cx')).lastHeartbeatAt !== hb || undefined,
    30_000,
  );
  assert.deepEqual(
    (await b<VmView[]>('vm', 'list')).map((v) => v.name),
    [],
  );
  const pool = join(sites.b.dataDir, 'pools', 'default');
  assert.deepEqual(
    (await readdir(pool).catch(() => [])).filter((f) => f.startsWith('cx-')),
    [],
    'no disk image left at the destination',
  );
  assert.equal(vm.id, (await a<VmView>('vm', 'show', 'cx')).id);
  await assertWriteLogWhole('a', 'cx');
  await a('vm', 'delete', 'cx', '--force');
});

test('a physical-mode or a shared raw device mapping refuses live migration with a typed error before anything moves', async () => {
  const luns = [
    await LoopDevice.create(sites.a.dataDir, 'lun-mp', 16),
    await LoopDevice.create(sites.a.dataDir, 'lun-ms', 16),
  ];
  try {
    await a('disk', 'create', 'lun-mp', '--rdm', luns[0]!.device, '--mode', 'physical');
    await a('disk', 'create', 'lun-ms', '--rdm', luns[1]!.device, '--mode', 'virtual', '--shared');
    // Each VM's data disk is the mapped device: its write log goes to the device itself.
    const cases = [
      {
        vm: 'rdm-mp',
        disk: 'lun-mp',
        code: 'RDM_PHYSICAL_REFUSED',
        why: /disk lun-mp of rdm-mp is a physical-mode raw device mapping/,
      },
      {
        vm: 'rdm-ms',
        disk: 'lun-ms',
        code: 'DISK_SHARED_REFUSED',
        why: /disk lun-ms of rdm-ms is shared with other VMs/,
      },
    ];
    for (const c of cases) await a('vm', 'create', c.vm, '--test-guest', '--disk', c.disk, '--writelog-rate', '20');
    for (const c of cases) await a('vm', 'start', c.vm);
    for (const c of cases) {
      await sites.a.waitFor(
        `${c.vm} heartbeat`,
        async () => (await a<VmView>('vm', 'show', c.vm)).lastHeartbeatAt,
        180_000,
      );
      const before = await a<VmView>('vm', 'show', c.vm);
      const r = await sites.cli('a', 'vm', 'migrate', c.vm, '--to', 'site-b', '--json');
      assert.notEqual(r.code, 0, `${c.vm} migrated: ${r.stdout.slice(0, 2000)}`);
      assert.match(r.stderr, c.why);
      assert.match(r.stderr, new RegExp(`\\[${c.code}\\]`), r.stderr);
      // Nothing moved: no migration job for it at the source; no VM, folder or disk image at the destination.
      assert.deepEqual(
        (await a<(Job & { target: string })[]>('job', 'list', '--kind', 'vm-migration')).filter(
          (j) => j.target === `vm:${before.id}`,
        ),
        [],
      );
      assert.ok(
        !(await b<VmView[]>('vm', 'list')).some((v) => v.name === c.vm || v.id === before.id),
        'no VM at the destination',
      );
      assert.deepEqual(
        await readdir(join(sites.b.dataDir, 'vms', before.id)).catch(() => []),
        [],
        'no VM folder at the destination',
      );
      const pool = join(sites.b.dataDir, 'pools', 'default');
      assert.deepEqual(
        (await readdir(pool).catch(() => [])).filter((f) => f.startsWith(`${c.vm}-`) || f.includes(before.id)),
        [],
        'no disk image at the destination',
      );
      // The VM runs on at the source, the same QEMU, and goes on beating and writing.
      const after = await a<VmView>('vm', 'show', c.vm);
      assert.equal(after.state, 'running');
      assert.equal(after.pid, before.pid, 'the same QEMU process');
      assert.equal(await alive(before.pid!), true);
      const acked = Math.max(0, ...parseSerialAcks(await readFile(after.serialLog, 'utf8')));
      await sites.a.waitFor(
        `${c.vm} writes on at the source`,
        async () => Math.max(0, ...parseSerialAcks(await readFile(after.serialLog, 'utf8'))) > acked + 5 || undefined,
        60_000,
      );
    }
    for (const c of cases) await a('vm', 'delete', c.vm, '--force');
    for (const c of cases) await a('disk', 'delete', c.disk);
  } finally {
    for (const l of luns) await l.detach();
  }
});

test('a running, writing test guest live-migrates with a gap-free write log; the source QEMU is gone', async () => {
  const vm = await bootWriting('mv');
  const sourcePid = vm.pid!;
  const hb = watchHeartbeats([vm.serialLog, join(sites.b.dataDir, 'vms', vm.id, 'serial.log')]);
  const r = await sites.cli('a', 'vm', 'migrate', 'mv', '--to', 'site-b', '--json');
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const done = JSON.parse(r.stdout) as Job & {
    result: { downtimeMs: number; totalMs: number; ramBytes: number; diskBytes: number };
  };
  assert.ok(
    done.result.downtimeMs >= 0 && done.result.ramBytes > 0 && done.result.diskBytes >= vm.disks[0]!.sizeBytes / 2,
    JSON.stringify(done.result),
  );
  // A few heartbeats at site-b (waited for, not timed: a loaded machine beats slower), then:
  // the longest silence, against the reported downtime.
  await sites.b.waitFor('three heartbeats at site-b', async () => hb.seen(1) >= 3 || undefined, 120_000);
  const beats = await hb.stop();
  const gaps = beats.slice(1).map((b, i) => ({ from: beats[i]!.n, to: b.n, ms: b.at - beats[i]!.at }));
  const longest = gaps.reduce((m, g) => (g.ms > m.ms ? g : m));
  // The guest beats once a second (a little more under TCG): the usual gap is that period,
  // and what the longest exceeds it by is how long the heartbeat stopped.
  const period = gaps.map((g) => g.ms).sort((x, y) => x - y)[Math.floor(gaps.length / 2)]!;
  console.log(
    `heartbeat: ${beats.length} beats, period ${period} ms, longest gap ${longest.ms} ms (${longest.from}->${longest.to}), downtime ${done.result.downtimeMs} ms`,
  );
  assert.ok(
    beats.some((b) => b.file === 0) && beats.filter((b) => b.file === 1).length >= 3,
    'heartbeats seen at both sites',
  );
  assert.ok(
    beats.every((b, i) => i === 0 || b.n === beats[i - 1]!.n + 1),
    'every heartbeat, in order, across both sites (the guest never restarted)',
  );
  assert.ok(
    longest.ms - period <= done.result.downtimeMs + 1000,
    `the heartbeat stopped for ${longest.ms - period} ms beyond its period; the reported downtime was ${done.result.downtimeMs} ms`,
  );
  const there = await b<VmView>('vm', 'show', 'mv');
  assert.equal(there.state, 'running');
  assert.equal(there.id, vm.id, 'the VM keeps its identity');
  assert.deepEqual(
    there.nics.map((n) => n.mac),
    vm.nics.map((n) => n.mac),
  );
  assert.deepEqual(
    (await a<VmView[]>('vm', 'list')).map((v) => v.name),
    [],
  );
  assert.equal(await alive(sourcePid), false, 'the source QEMU is gone');
  // The guest goes on writing at site-b: its acknowledgements continue there.
  const acksAtB = await sites.b.waitFor(
    'acks at site-b',
    async () => {
      const acks = parseSerialAcks(await readFile(there.serialLog, 'utf8'));
      return acks.length >= 20 ? acks : undefined;
    },
    180_000,
  );
  await b('vm', 'stop', 'mv', '--timeout', '60');
  const finalAcks = parseSerialAcks(await readFile(there.serialLog, 'utf8'));
  const report = await b<{ consistent: boolean; lastSequence: number; gaps: unknown[]; tornCount: number }>(
    'verify-writelog',
    there.disks[0]!.path,
  );
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.tornCount, 0);
  assert.ok(
    report.lastSequence >= Math.max(...finalAcks),
    `log holds ${report.lastSequence}, guest acknowledged ${Math.max(...finalAcks)}`,
  );
  assert.ok(acksAtB[0]! > 1, 'the log continued from what was written at site-a');
});

test('the destination killed before switchover: the VM runs on at the source; the restarted destination removes its half-made copy', async () => {
  await bootWriting('dk');
  const job = await a<Job>('vm', 'migrate', 'dk', '--to', 'site-b', '--bandwidth', '1', '--no-wait');
  const live = await sites.a.waitFor(
    'RAM being copied',
    async () => {
      const j = await a<Job & { context: { live?: { ramTransferred: number; ramRemaining: number } } }>(
        'job',
        'show',
        job.id,
      );
      return j.context?.live && j.context.live.ramTransferred > 0 ? j.context.live : undefined;
    },
    180_000,
  );
  assert.ok(live.ramRemaining > 0, 'progress shows what is left to copy');
  const incomingPid = (await b<VmView>('vm', 'show', 'dk')).pid!;
  await sites.b.crashServer();
  process.kill(incomingPid, 'SIGKILL');
  const ended = await sites.a.waitFor(
    'the job to end',
    async () => {
      const j = await a<Job>('job', 'show', job.id);
      return j.state !== 'running' ? j : undefined;
    },
    180_000,
  );
  assert.equal(ended.state, 'failed');
  assert.equal((await a<VmView>('vm', 'show', 'dk')).state, 'running', 'the guest was resumed at the source');
  const hb = (await a<VmView>('vm', 'show', 'dk')).lastHeartbeatAt;
  await sites.a.waitFor(
    'heartbeats go on at the source',
    async () => (await a<VmView>('vm', 'show', 'dk')).lastHeartbeatAt !== hb || undefined,
    30_000,
  );
  await sites.b.start();
  assert.ok(!(await b<VmView[]>('vm', 'list')).some((v) => v.name === 'dk'), 'the half-made copy is gone');
  const pool = join(sites.b.dataDir, 'pools', 'default');
  assert.deepEqual(
    (await readdir(pool).catch(() => [])).filter((f) => f.startsWith('dk-')),
    [],
    'no disk image left at the destination',
  );
  // The VM still migrates afterwards.
  const r = await sites.cli('a', 'vm', 'migrate', 'dk', '--to', 'site-b');
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal((await b<VmView>('vm', 'show', 'dk')).state, 'running');
  // The log the guest wrote through the failed migration and the next one is whole.
  await assertWriteLogWhole('b', 'dk');
});

test('the link cut before switchover: nothing moves, the source rolls back and the VM writes on; the destination removes its copy by itself', async () => {
  await bootWriting('lc');
  const job = await a<Job>(
    'vm',
    'migrate',
    'lc',
    '--to',
    'site-b',
    '--bandwidth',
    '1',
    '--link-timeout',
    '10',
    '--no-wait',
  );
  await sites.a.waitFor(
    'RAM being copied',
    async () => {
      const j = await a<Job & { context: { live?: { ramTransferred: number } } }>('job', 'show', job.id);
      return j.context?.live && j.context.live.ramTransferred > 0 ? true : undefined;
    },
    180_000,
  );
  await sites.cutLink('blackhole');
  try {
    const ended = await sites.a.waitFor(
      'the job to end',
      async () => {
        const j = await a<Job>('job', 'show', job.id);
        return j.state !== 'running' ? j : undefined;
      },
      180_000,
    );
    assert.equal(ended.state, 'failed');
    assert.equal(ended.error!.code, 'PEER_UNREACHABLE', ended.error!.message);
    assert.match(ended.error!.message, /link to the destination is cut/);
    const vm = await a<VmView>('vm', 'show', 'lc');
    assert.equal(vm.state, 'running');
    // The guest's disk I/O is not stuck behind the cut mirror: it acknowledges new writes.
    const before = Math.max(0, ...parseSerialAcks(await readFile(vm.serialLog, 'utf8')));
    await sites.a.waitFor(
      'new writes acknowledged at the source',
      async () => Math.max(0, ...parseSerialAcks(await readFile(vm.serialLog, 'utf8'))) > before + 20 || undefined,
      60_000,
    );
  } finally {
    await sites.restoreLink();
  }
  // The source could not reach it to abort; the destination's lease ran out instead.
  await sites.b.waitFor(
    'the destination to remove its copy',
    async () => !(await b<VmView[]>('vm', 'list')).some((v) => v.name === 'lc') || undefined,
    120_000,
  );
  const pool = join(sites.b.dataDir, 'pools', 'default');
  assert.deepEqual(
    (await readdir(pool).catch(() => [])).filter((f) => f.startsWith('lc-')),
    [],
    'no disk image left at the destination',
  );
  await assertWriteLogWhole('a', 'lc');
  await a('vm', 'delete', 'lc', '--force');
});

test('a replicated VM migrates onto its replica sending only what changed, then replication runs the other way', async () => {
  const vm = await bootWriting('rv');
  await a('replicate', 'enable', 'rv', '--to', 'site-b', '--rpo', '1h');
  await sites.a.waitFor(
    'first point',
    async () => (await a<{ lastPointAt: string | null }>('replicate', 'status', 'rv')).lastPointAt,
    180_000,
  );
  const r = await sites.cli('a', 'vm', 'migrate', 'rv', '--to', 'site-b', '--json');
  assert.equal(r.code, 0, `${r.stderr}${r.stdout.slice(0, 3000)}`);
  const job = JSON.parse(r.stdout) as Job & {
    result: { replicaAware: boolean; diskBytes: number; deltaPauseMs: number };
  };
  assert.equal(job.result.replicaAware, true);
  const diskSize = vm.disks[0]!.sizeBytes;
  assert.ok(job.result.diskBytes < diskSize / 4, `sent ${job.result.diskBytes} disk bytes of ${diskSize}`);
  const there = await b<VmView>('vm', 'show', 'rv');
  assert.equal(there.state, 'running');
  assert.equal(there.id, vm.id);
  // The VM replicates back to site-a now, from the old disks as seeds.
  const back = await b<{ to: string; points: number; lastCycle: { mode: string; bytesSent: number } | null }>(
    'replicate',
    'status',
    'rv',
  );
  assert.equal(back.to, 'site-a');
  assert.ok(back.points >= 1);
  assert.ok(back.lastCycle!.bytesSent < diskSize / 4, `the reverse cycle sent ${back.lastCycle!.bytesSent} bytes`);
  // No resync: a bitmap started at the destination before the guest ran there knows what changed since.
  assert.equal(back.lastCycle!.mode, 'incremental');
  assert.ok(!(await a<VmView[]>('vm', 'list')).some((v) => v.name === 'rv'), 'site-a keeps the VM only as a replica');
  // The write log at site-b is whole.
  await sites.b.waitFor(
    'acks at site-b',
    async () => parseSerialAcks(await readFile(there.serialLog, 'utf8')).length >= 10 || undefined,
    180_000,
  );
  await b('vm', 'stop', 'rv', '--timeout', '60');
  const acks = parseSerialAcks(await readFile(there.serialLog, 'utf8'));
  const report = await b<{ consistent: boolean; lastSequence: number; tornCount: number }>(
    'verify-writelog',
    there.disks[0]!.path,
  );
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.ok(report.lastSequence >= Math.max(...acks));
});

test('a continuously replicated VM migrates onto its replica, then replicates back continuously', async () => {
  const vm = await bootWriting('cv');
  await a('replicate', 'enable', 'cv', '--to', 'site-b', '--continuous', '--journal', '1h');
  await waitStreaming(sites.a, 'cv');
  // The final sync ends the journal's session (its tap and the migration's mirror cannot share
  // a disk), then the migration sends what changed since that point.
  const r = await sites.cli('a', 'vm', 'migrate', 'cv', '--to', 'site-b', '--json');
  assert.equal(r.code, 0, `${r.stderr}${r.stdout.slice(0, 3000)}`);
  const job = JSON.parse(r.stdout) as Job & { result: { replicaAware: boolean; diskBytes: number } };
  assert.equal(job.result.replicaAware, true);
  assert.ok(job.result.diskBytes < vm.disks[0]!.sizeBytes / 4, `sent ${job.result.diskBytes} disk bytes`);
  // Back to site-a as it was protected: continuously, its journal streaming into site-a's replica.
  const back = await b<ReplicationStatus>('replicate', 'status', 'cv');
  assert.equal(back.to, 'site-a');
  assert.deepEqual(back.continuous, { checkpointSeconds: 1, journalSeconds: 3600, appCheckpointSeconds: null });
  await waitStreaming(sites.b, 'cv');
  const there = await b<VmView>('vm', 'show', 'cv');
  await sites.b.waitFor(
    'acks at site-b',
    async () => parseSerialAcks(await readFile(there.serialLog, 'utf8')).length >= 10 || undefined,
    180_000,
  );
  // Paused first: a stop would hand the VM to cycles, whose offline copy holds its disk a while.
  await b('replicate', 'pause', 'cv');
  await b('vm', 'stop', 'cv', '--timeout', '60');
  const acks = parseSerialAcks(await readFile(there.serialLog, 'utf8'));
  const report = await b<{ consistent: boolean; lastSequence: number }>('verify-writelog', there.disks[0]!.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.ok(report.lastSequence >= Math.max(...acks));
});

test('the source site server killed mid-migration: its restart rolls the migration back from the journal; the VM runs on at the source', async () => {
  await bootWriting('sk');
  const job = await a<Job>('vm', 'migrate', 'sk', '--to', 'site-b', '--bandwidth', '1', '--no-wait');
  await sites.a.waitFor(
    'the migration under way',
    async () => {
      const j = await a<Job>('job', 'show', job.id);
      return j.steps.some((s) => s.name === 'migrate' && s.state === 'running') ? j : undefined;
    },
    180_000,
  );
  await sites.a.crashServer();
  await sites.a.start();
  const ended = await a<Job>('job', 'show', job.id);
  assert.equal(ended.state, 'failed', 'the recovery rule closed the cut migration');
  const vm = await a<VmView>('vm', 'show', 'sk');
  assert.equal(vm.state, 'running');
  await sites.a.waitFor(
    'heartbeats go on at the source',
    async () => (await a<VmView>('vm', 'show', 'sk')).lastHeartbeatAt !== vm.lastHeartbeatAt || undefined,
    30_000,
  );
  assert.ok(!(await b<VmView[]>('vm', 'list')).some((v) => v.name === 'sk'), 'the destination removed its copy');
  // Nothing of the migration is left in the source QEMU: it migrates again, to the end.
  const r = await sites.cli('a', 'vm', 'migrate', 'sk', '--to', 'site-b');
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal((await b<VmView>('vm', 'show', 'sk')).state, 'running');
});

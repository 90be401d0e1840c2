import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { runProcess } from '../../../src/core/run-process.js';
import Database from 'better-sqlite3';
import type { CycleStats, ReplicationStatus } from '../../../src/replication/replication-service.js';

/*
 * Faults injected in the middle of replication cycles. After each one the newest recovery
 * point still verifies as a gap-free prefix, and the next cycle is incremental again:
 * it sends about what changed, not the disk.
 * Cycles are throttled (--bandwidth) so a cycle lasts long enough to be cut.
 *
 * The two sites are joined by the emulated WAN (100 Mbit/s, 50 ms round trip: test/harness/
 * wan-link.ts), not a bare veth: every API call and every NBD request pays the round trip,
 * as between real sites, and the cuts happen on that link.
 */
interface Verified {
  point: { id: string };
  report: { consistent: boolean; lastSequence: number | null };
}

let sites: TwoSites;
let replicasRoot: string;
before(async () => {
  sites = await TwoSites.create({ wan: '100m-50ms' });
  await sites.pairBothWays();
  replicasRoot = join(sites.b.dataDir, 'replicas');
});
after(async () => {
  await sites?.destroy();
});

const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const status = () => a<ReplicationStatus>('replicate', 'status', 'fv');

/**
 * Waits until the recovery site has a cycle open (a staging overlay exists) and returns the pid
 * of its staging daemon, the one process that serves every open cycle there.
 */
async function openCyclePid(): Promise<number> {
  return sites.a.waitFor(
    'a cycle in flight at the recovery site',
    async () => {
      const pid = Number(
        (await readFile(join(sites.b.dataDir, 'staging-daemon', 'sd.pid'), 'utf8').catch(() => '')).trim(),
      );
      // A daemon killed earlier leaves its pid file behind: only a live one serves a cycle.
      if (!(pid > 0 && (await alive(pid)))) return undefined;
      for (const rep of await readdir(replicasRoot).catch(() => [])) {
        for (const disk of await readdir(join(replicasRoot, rep)).catch(() => [])) {
          const files = await readdir(join(replicasRoot, rep, disk)).catch(() => []);
          if (files.some((f) => f.startsWith('staging-'))) return pid;
        }
      }
      return undefined;
    },
    60_000,
  );
}

async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

async function newestVerifies(): Promise<number> {
  const v = await a<Verified>('replicate', 'verify', 'fv');
  assert.equal(v.report.consistent, true, JSON.stringify(v.report));
  return v.report.lastSequence ?? 0;
}

/** Lets the guest write, runs one cycle in the background and returns it with the open cycle's daemon pid. */
async function cutCycle(): Promise<{ cycle: Promise<{ code: number; stderr: string }>; daemonPid: number }> {
  // ~15 s of log at 20 records/s (about 1.2 MiB): at 256 KiB/s the cycle takes seconds, long
  // enough to cut; what piles up during a cut still copies in well under a minute.
  await new Promise((r) => setTimeout(r, 15_000));
  const cycle = sites.cli('a', 'replicate', 'sync-now', 'fv');
  return { cycle, daemonPid: await openCyclePid() };
}

/** The cycles the source recorded since `since` (ms), its own retries included. */
function cyclesSince(since: number): CycleStats[] {
  const db = new Database(join(sites.a.dataDir, 'mamori.db'), { readonly: true });
  const row = db.prepare('SELECT stats FROM replications').get() as { stats: string };
  db.close();
  return (JSON.parse(row.stats) as CycleStats[]).filter((c) => Date.parse(c.at) >= since);
}

/**
 * The fault at `faultAt` kept the bitmap: the next cycle, and any the scheduler retried on its
 * own before it, are incremental. A resync (the bitmap lost, both disks read whole) fails this,
 * even one the scheduler ran first, which would leave the cycle after it incremental.
 */
async function nextCycleIsIncremental(faultAt: number, lastSeq: number): Promise<ReplicationStatus> {
  const r = await sites.cli('a', 'replicate', 'sync-now', 'fv', '--json');
  if (r.code !== 0) {
    // Where did it stop? The cycles' journals and the server's last lines say.
    const jobs = await sites.cli('a', 'job', 'list', '--kind', 'replication-cycle');
    assert.fail(
      `sync-now failed (${r.code}): ${r.stderr}\njobs: ${jobs.stdout.slice(0, 4000)}\nserver log:\n${sites.a.serverLog.slice(-4000)}`,
    );
  }
  const s = JSON.parse(r.stdout) as ReplicationStatus;
  assert.equal(s.failures, 0, s.lastError ?? '');
  assert.equal(s.lastCycle!.mode, 'incremental');
  const since = cyclesSince(faultAt);
  assert.ok(since.length >= 1, 'the cycle just run is recorded');
  assert.deepEqual(
    since.map((c) => c.mode).filter((m) => m !== 'incremental'),
    [],
    `cycles since the fault: ${JSON.stringify(since)}`,
  );
  // Incremental reads only what the bitmap marks: the log written since the last point before the
  // fault (4 KiB records, rounded to 64 KiB bitmap chunks at each cycle's ends), never the whole disk
  // a resync compares. Counted in records, not seconds: a slow machine writes more between cycles.
  const now = await newestVerifies();
  const bound = (now - lastSeq) * 4096 + since.length * 2 * 64 * 1024 + 1024 * 1024;
  const covered = since.reduce((sum, c) => sum + c.bytesChanged, 0);
  assert.ok(
    covered <= bound,
    `cycles since the fault covered ${covered} bytes for ${now - lastSeq} records (bound ${bound}): ${JSON.stringify(since)}`,
  );
  assert.ok(covered < 64 * 1024 * 1024, 'less than the disk');
  return s;
}

test('a recovery site without room refuses the replica clearly; nothing is created', async () => {
  await mkdir(replicasRoot, { recursive: true });
  // `ip netns exec` gave the server a mount namespace of its own: mount inside it.
  const inServer = ['-t', String(sites.b.serverPid), '-m'];
  await runProcess('nsenter', [...inServer, 'mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', replicasRoot]);
  try {
    await a('vm', 'create', 'big', '--test-guest', '--data-disk', '64M');
    const r = await sites.cli('a', 'replicate', 'enable', 'big', '--to', 'site-b', '--rpo', '30s');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /MiB free but the replica of big needs up to 64 MiB.*\[.*POOL_FULL\]/);
    assert.deepEqual(await readdir(replicasRoot), []);
    assert.deepEqual(await a('replicate', 'status'), []);
    // The source is untouched: the VM is there and can still be deleted.
    await a('vm', 'delete', 'big');
  } finally {
    await runProcess('nsenter', [...inServer, 'umount', replicasRoot]);
  }
});

test('link cut, recovery daemon killed, source QEMU killed mid-cycle: points stay whole, cycles resume', async () => {
  await a('vm', 'create', 'fv', '--test-guest', '--data-disk', '64M', '--writelog-rate', '20');
  await a('vm', 'start', 'fv');
  await sites.a.waitFor(
    'heartbeat',
    async () => (await a<{ lastHeartbeatAt: string | null }>('vm', 'show', 'fv')).lastHeartbeatAt,
    120_000,
  );
  // A long RPO keeps the timer out of the way; cycles here are started by hand.
  await a('replicate', 'enable', 'fv', '--to', 'site-b', '--rpo', '1h', '--bandwidth', '256K');
  await sites.a.waitFor('first point', async () => (await status()).lastPointAt, 120_000);
  let last = await newestVerifies();

  // 1. The link goes silent in the middle of a cycle: it fails within its timeouts, no point is made.
  {
    const { cycle } = await cutCycle();
    const faultAt = Date.now();
    await sites.cutLink('blackhole');
    const r = await cycle;
    await sites.restoreLink();
    assert.notEqual(r.code, 0, 'the cut cycle fails');
    // The scheduler may already have retried (1 s backoff): the newest point is whole either way.
    assert.ok((await newestVerifies()) >= last);
    await nextCycleIsIncremental(faultAt, last);
    last = await newestVerifies();
  }

  // 2. kill -9 of the recovery site's storage daemon while it receives.
  {
    const { cycle, daemonPid } = await cutCycle();
    const faultAt = Date.now();
    process.kill(daemonPid, 'SIGKILL');
    const r = await cycle;
    assert.notEqual(r.code, 0, `the cycle survived its receiver: ${r.stderr} ${JSON.stringify(await status())}`);
    assert.ok((await newestVerifies()) >= last);
    await nextCycleIsIncremental(faultAt, last);
    last = await newestVerifies();
  }

  // 3. kill -9 of the source QEMU mid-cycle: its bitmap is lost, so what follows resyncs by
  //    comparing with the replica and sending only what differs, never a blind full copy.
  //    (The cut cycle may fail, or finish offline from the crashed VM's image if QEMU died
  //    before it froze the point: either way the newest point must be whole.)
  {
    const vm = await a<{ pid: number }>('vm', 'show', 'fv');
    const { cycle } = await cutCycle();
    process.kill(vm.pid, 'SIGKILL');
    const killedAt = Date.now();
    await cycle;
    assert.ok((await newestVerifies()) >= last);
    await sites.a.waitFor(
      'crashed',
      async () => (await a<{ state: string }>('vm', 'show', 'fv')).state === 'crashed',
      30_000,
    );
    const s = await a<ReplicationStatus>('replicate', 'sync-now', 'fv');
    assert.equal(s.failures, 0, s.lastError ?? '');
    // Cycles since the kill (the scheduler may have retried on its own): one resynced, and it
    // sent only what differed from the replica, far less than it compared.
    const since = cyclesSince(killedAt - 60_000);
    const resync = since.find((c) => c.mode === 'resync');
    assert.ok(resync, `a lost bitmap leads to a resync; cycles since the kill: ${JSON.stringify(since)}`);
    assert.ok(
      resync.bytesSent < resync.bytesChanged / 2,
      `resync sent ${resync.bytesSent} of ${resync.bytesChanged} compared bytes`,
    );
    // Sharper: it sent about the log written since the last verified point (4 KiB records,
    // in 1 MiB chunks, plus rounding at both ends), not the whole log the disk holds. The
    // disk must hold more log than that bound, or a resync that sent every chunk would pass.
    const now = await newestVerifies();
    assert.ok(now >= last);
    const bound = (now - last) * 4096 + 3 * 1024 * 1024;
    assert.ok(
      now * 4096 > bound,
      `the disk holds ${now} records, too few to tell a resync from a full copy (bound ${bound})`,
    );
    assert.ok(
      resync.bytesSent <= bound,
      `resync sent ${resync.bytesSent} bytes for ${now - last} records written since the last point`,
    );
  }
});

test('kill -9 of the source site server mid-cycle: the restart undoes the cut cycle, the next one is incremental', async () => {
  // The VM crashed in the test above; run it again so the cycle is a live one.
  await a('vm', 'start', 'fv');
  await sites.a.waitFor(
    'heartbeat',
    async () => (await a<{ lastHeartbeatAt: string | null }>('vm', 'show', 'fv')).lastHeartbeatAt,
    120_000,
  );
  await a<ReplicationStatus>('replicate', 'sync-now', 'fv');
  const last = await newestVerifies();
  const vmId = (await a<{ id: string }>('vm', 'show', 'fv')).id;
  const workDir = join(sites.a.dataDir, 'vms', vmId, 'replication');

  const { cycle } = await cutCycle();
  const inCopy = await sites.a.waitFor(
    'the cycle job in its copy step',
    async () =>
      (await a<Job[]>('job', 'list', '--kind', 'replication-cycle')).find(
        (j) => j.state === 'running' && j.steps.some((s) => s.name === 'copy' && s.state === 'running'),
      ),
    30_000,
  );
  // Mid-copy the source QEMU holds a fleecing point: an overlay file, a backup job, an export.
  assert.ok(
    (await readdir(workDir)).some((f) => f.endsWith('.qcow2')),
    'a fleecing overlay exists mid-cycle',
  );
  const faultAt = Date.now();
  await sites.a.crashServer();
  assert.notEqual((await cycle).code, 0, 'the CLI saw its server die');

  await sites.a.start();
  // The restart ran the cycle's recovery rule before serving: the job is closed as cut, and
  // the fleecing point is gone from QEMU (its overlay deleted, its NBD socket closed).
  const recovered = await a<Job>('job', 'show', inCopy.id);
  assert.equal(recovered.state, 'failed');
  assert.match(recovered.error!.message, /site server stopped during this job/);
  assert.deepEqual(
    (await readdir(workDir)).filter((f) => f.endsWith('.qcow2') || f.endsWith('.sock')),
    [],
  );
  assert.equal((await a<{ state: string }>('vm', 'show', 'fv')).state, 'running', 'the VM outlived its server');
  // The point the cut cycle was making never appeared; the newest is whole.
  assert.ok((await newestVerifies()) >= last);
  // The old bitmap was kept (the peer had not committed), so the next cycle is incremental,
  // not a resync, and sends about what the guest wrote since the last point.
  await nextCycleIsIncremental(faultAt, last);
  assert.ok((await newestVerifies()) > last);
});

test('kill -9 of the recovery site server mid-cycle: its restart stops the orphaned storage daemon; cycles resume', async () => {
  const last = await newestVerifies();
  const { cycle, daemonPid } = await cutCycle();
  const faultAt = Date.now();
  await sites.b.crashServer();
  assert.notEqual((await cycle).code, 0, 'no point without the recovery site committing it');
  assert.ok(await alive(daemonPid), 'the storage daemon outlived its server, holding the staging image');
  await sites.b.start();
  assert.equal(await alive(daemonPid), false, 'the restarted recovery site stopped the orphan before serving');
  assert.ok((await newestVerifies()) >= last);
  await nextCycleIsIncremental(faultAt, last);
  assert.ok((await newestVerifies()) > last);
});

test('starting a VM while a cycle copies its stopped images cuts that cycle short; nothing is lost', async () => {
  if ((await a<{ state: string }>('vm', 'show', 'fv')).state !== 'running') await a('vm', 'start', 'fv');
  await sites.a.waitFor(
    'heartbeat',
    async () => (await a<{ lastHeartbeatAt: string | null }>('vm', 'show', 'fv')).lastHeartbeatAt,
    120_000,
  );
  const last = await newestVerifies();
  const vmId = (await a<{ id: string }>('vm', 'show', 'fv')).id;
  const pidFile = join(sites.a.dataDir, 'vms', vmId, 'replication', 'mamori-fleece.pid');
  await new Promise((r) => setTimeout(r, 15_000)); // a few seconds of log to copy at 256 KiB/s
  await a('vm', 'stop', 'fv');
  const cycle = sites.cli('a', 'replicate', 'sync-now', 'fv');
  // The stopped VM's images are exported by a storage daemon for the cycle (read-only, locked).
  await sites.a.waitFor(
    'an offline cycle reading the images',
    async () => {
      const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
      return pid > 0 && (await alive(pid)) ? pid : undefined;
    },
    30_000,
  );
  const faultAt = Date.now();
  await a('vm', 'start', 'fv');
  await cycle; // cut short (or just finished): either way the start went through
  assert.equal((await a<{ state: string }>('vm', 'show', 'fv')).state, 'running');
  assert.ok((await newestVerifies()) >= last);
  // The bitmap kept by the cut cycle still covers every change.
  await nextCycleIsIncremental(faultAt, last);
  assert.ok((await newestVerifies()) > last);
});

interface Job {
  id: string;
  state: string;
  steps: { name: string; state: string }[];
  error: { code: string; message: string } | null;
}

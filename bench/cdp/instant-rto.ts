/**
 * Instant recovery's RTO against a recovery that copies first (issue 22,
 * `instant_recovery_rto_vs_copy_recovery` <= 0.2 for a 20 GiB disk holding 8 GiB), through the
 * product: two real site servers (test/harness/two-sites.ts), the test guest with a second disk
 * of `diskGiB` holding `filledGiB` of data, `replicate enable --continuous`, and a plan at site-b.
 *
 * - Instant: `plan run --mode test --point T` at site-b; the run's own RTO for the VM (run start
 *   to the recovered guest's first heartbeat), its disks booted from the instant's export.
 * - Copy recovery (the baseline the issue names), measured in the same run on the same instant:
 *   the copy a copy-first recovery makes (`qemu-img convert` of each of the recovered disks, read
 *   through the export, into standalone local qcow2 files), plus the same guest's boot from local
 *   disks (site-a's start of the protected VM to its first heartbeat). The plan's other steps are
 *   left out of it, which only flatters the baseline.
 * - A fairer copy beside it: the big disk copied from the replica's local qcow2 chain at site-b
 *   (no export in the way, read and written with O_DIRECT), plus the same boot.
 * The test guest boots its kernel from host files and reads little of its disks at boot: a real
 * OS reads more through the export (issue 23's guest will say how much that costs).
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TwoSites } from '../../test/harness/two-sites.js';
import { runProcess } from '../../src/core/run-process.js';
import { ReplicaChain } from '../../src/replication/replica-chain.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import type { PlanRun } from '../../src/plans/run-journal.js';
import type { VmView } from '../../src/vms/vm-service.js';

const GiB = 1024 ** 3;
/** qemu-io writes at most this much per command (its buffer is allocated whole). */
const CHUNK = 256 * 1024 ** 2;

export interface InstantRtoRun {
  diskGiB: number;
  filledGiB: number;
  instantRtoSeconds: number;
  /** The plan run's wall time, command to report. */
  instantRunSeconds: number;
  copyThroughExportSeconds: number;
  copyFromReplicaSeconds: number;
  localBootSeconds: number;
  initialSyncSeconds: number;
  pointTime: string;
}

export async function instantRtoRun(o: { diskGiB: number; filledGiB: number }): Promise<InstantRtoRun> {
  const sites = await TwoSites.create();
  const work = await mkdtemp(join(tmpdir(), 'mamori-bench-ir-'));
  try {
    await sites.pairBothWays();
    const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
    const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);
    // The big disk, filled before any VM holds it: a different byte per 256 MiB, so no two
    // chunks are alike, and nothing of it is zero.
    await a('disk', 'create', 'big', '--size', `${o.diskGiB}G`);
    const big = await a<{ path: string }>('disk', 'show', 'big');
    const commands: string[] = [];
    for (let at = 0, k = 1; at < o.filledGiB * GiB; at += CHUNK, k++)
      commands.push('-c', `write -P ${k % 255 || 1} ${at} ${CHUNK}`);
    await runProcess('qemu-io', ['-f', 'qcow2', ...commands, big.path], { timeoutMs: 3600_000 });

    await a('vm', 'create', 'ir', '--test-guest', '--data-disk', '64M', '--writelog-rate', '50', '--disk', 'big');
    const started = Date.now();
    await a('vm', 'start', 'ir');
    const heartbeat = await sites.a.waitFor(
      'the protected guest boots',
      async () => (await a<VmView>('vm', 'show', 'ir')).lastHeartbeatAt ?? undefined,
      300_000,
    );
    const localBootSeconds = (Date.parse(heartbeat) - started) / 1000;

    const syncStart = Date.now();
    await a('replicate', 'enable', 'ir', '--to', 'site-b', '--continuous', '--checkpoint', '1s');
    await sites.a.waitFor(
      'the journal streams',
      async () => {
        const j = (await a<ReplicationStatus>('replicate', 'status', 'ir')).journal;
        return j?.state === 'streaming' && j.shippedAt !== null ? j : undefined;
      },
      3600_000,
    );
    const initialSyncSeconds = (Date.now() - syncStart) / 1000;
    // A few checkpoints past the base, then an instant among them.
    await new Promise((r) => setTimeout(r, 5_000));
    const at = new Date(Date.now() - 2_000).toISOString();

    await a('group', 'create', 'irg', '--vm', 'ir');
    await b('network', 'create', 'testnet', '--isolated');
    await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
    await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
    const plan = join(work, 'plan.yaml');
    await writeFile(
      plan,
      'name: ir-plan\nprotectionGroups: [irg]\nvms:\n  ir:\n    priority: 1\n    waitHeartbeat: 600s\n',
    );
    await b('plan', 'apply', plan);

    const runStart = Date.now();
    const r = await sites.b.cli('plan', 'run', 'ir-plan', '--mode', 'test', '--point', at);
    const instantRunSeconds = (Date.now() - runStart) / 1000;
    if (r.code !== 0) throw new Error(`the test run failed: ${r.stderr}${r.stdout}`);
    const id = /^run (run-\S+):/m.exec(r.stdout)![1]!;
    const run = await b<PlanRun>('plan', 'report', id, '--json');
    if (run.result !== 'success') throw new Error(`the test run did not succeed: ${JSON.stringify(run.steps)}`);
    const out = run.vms['ir']!;
    const instantRtoSeconds = out.rtoSec!;

    // The copy a copy-first recovery of the same instant makes, with the test copy stopped.
    const testVm = (await b<VmView[]>('vm', 'list')).find((v) => v.id === out.recoveredVmId)!;
    await b('vm', 'stop', testVm.name, '--force');
    const copyStart = Date.now();
    for (const [k, d] of testVm.disks.filter((x) => x.format === 'qcow2').entries())
      await runProcess(
        'qemu-img',
        ['convert', '-U', '-W', '-f', 'qcow2', '-O', 'qcow2', d.path, join(work, `copy${k}.qcow2`)],
        { timeoutMs: 3600_000 },
      );
    const copyThroughExportSeconds = (Date.now() - copyStart) / 1000;
    for (const f of await readdir(work)) if (f.startsWith('copy')) await rm(join(work, f), { force: true });

    // The fairer copy: the big disk from the replica's own chain at site-b, local qcow2 to local.
    const replica = (
      await b<{ id: string; vmName: string; disks: { index: number; sizeBytes: number }[] }[]>('replica', 'list')
    ).find((x) => x.vmName === 'ir')!;
    const bigDisk = replica.disks.reduce((x, y) => (y.sizeBytes > x.sizeBytes ? y : x));
    const chain = await ReplicaChain.open(join(sites.b.dataDir, 'replicas', replica.id, `disk${bigDisk.index}`));
    const replicaStart = Date.now();
    await runProcess(
      'qemu-img',
      // O_DIRECT both ways (-T none, -t none): the replica's 8 GiB, just written, sit in this
      // machine's page cache, where a recovery site's would not; and a copy is only done once
      // it is on disk.
      [
        'convert',
        '-U',
        '-W',
        '-T',
        'none',
        '-t',
        'none',
        '-f',
        'qcow2',
        '-O',
        'qcow2',
        chain.newestPoint()!.file,
        join(work, 'replica.qcow2'),
      ],
      { timeoutMs: 3600_000 },
    );
    const copyFromReplicaSeconds = (Date.now() - replicaStart) / 1000;
    await rm(join(work, 'replica.qcow2'), { force: true });

    await sites.b.cli('plan', 'run', 'ir-plan', '--mode', 'cleanup');
    return {
      diskGiB: o.diskGiB,
      filledGiB: o.filledGiB,
      instantRtoSeconds,
      instantRunSeconds,
      copyThroughExportSeconds,
      copyFromReplicaSeconds,
      localBootSeconds,
      initialSyncSeconds,
      pointTime: out.point!.time,
    };
  } finally {
    await sites.destroy().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}

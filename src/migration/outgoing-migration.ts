import { join } from 'node:path';
import type { ReplicationRepo } from '../store/repos/replication-repo.js';
import type { DiskRepo } from '../store/repos/disk-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { QmpMigrationInfo } from '../qemu/qmp-types.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { SiteTls } from '../sites/site-tls.js';
import type { SitePaths } from '../core/site-paths.js';
import { writeQemuTlsCreds } from '../sites/qemu-tls-creds.js';
import type { JobJournal } from '../jobs/job-journal.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { IncomingTarget } from './migration-target.js';
import type { ReplicationService } from '../replication/replication-service.js';
import { watchLink } from './link-watchdog.js';
import { copyReplicaDelta } from './replica-delta-copy.js';
import { MIGRATION_JOB, type MigrationContext } from './outgoing-state.js';
import type { ReverseReplication } from './reverse-replication.js';
import { MIGRATION_TLS_ID, rollBackMigration, waitJobsGone } from './migration-rollback.js';
import { finishMigration } from './migration-finish.js';

/** The source renews its claim on the destination's copy this often. */
const KEEPALIVE_MS = 5_000;

export interface MigrationResult {
  to: string;
  /** Onto the VM's replica: only what changed since its newest point crossed the link. */
  replicaAware: boolean;
  /** Replica-aware: how long the guest was paused while the changes since the point were copied. */
  deltaPauseMs: number | null;
  /** Replica-aware: what the last replication cycle, run at the start, sent (part of diskBytes). */
  finalSyncBytes: number;
  downtimeMs: number | null;
  totalMs: number;
  ramBytes: number;
  diskBytes: number;
}

/** What the source-side run of one migration uses (LiveMigrations holds them). */
export interface OutgoingMigrationDeps {
  diskRepo: DiskRepo;
  replications: ReplicationRepo;
  vms: VmService;
  supervisor: VmSupervisor;
  peers: SitePeers;
  tls: SiteTls;
  paths: SitePaths;
  jobs: JobJournal;
  log: Logger;
  replication: ReplicationService;
  /** After a replica-aware migration: the VM here is superseded and the peer replicates it back. */
  reverse: ReverseReplication;
  /** Per VM id: stops its running migration (the operator's cancel). */
  cancels: Map<string, () => void>;
}

/**
 * The source side of one migration, step by step (prepare, mirror, migrate, switchover,
 * finish) in its journalled job; see LiveMigrations for the sequence. Any failure before
 * `completed` rolls back (rollBackMigration) and fails the job.
 */
export async function runOutgoingMigration(
  deps: OutgoingMigrationDeps,
  jobId: string,
  vm: VmRow,
  ctx: MigrationContext,
  opts: { downtimeMs: number; mbps: number | undefined; linkTimeoutSec: number },
): Promise<void> {
  const { downtimeMs, mbps } = opts;
  const qmp = deps.supervisor.qmpOf(vm.id);
  if (!qmp) throw new MamoriError('VM_INVALID_STATE', `VM ${vm.name} has no QMP connection`);
  const started = Date.now();
  const stats = { mirrored: 0, delta: 0, finalSync: 0 };
  /** Why the migration stops early (the operator's cancel, a cut link); checked between steps. */
  let failure: MamoriError | null = null;
  let stopping = false;
  let switched = false;
  const cancelNow: ((why: MamoriError) => void)[] = [];
  /** note: only record the cause (what fails next is its consequence); then stop with it. */
  const stopWith = (why: MamoriError, opts: { noteOnly?: boolean } = {}): void => {
    failure ??= why;
    if (opts.noteOnly || stopping) return;
    stopping = true;
    for (const f of cancelNow) f(failure);
  };
  deps.cancels.set(vm.id, () =>
    stopWith(new MamoriError('VM_INVALID_STATE', 'the migration was cancelled; the VM runs on at the source')),
  );
  const check = (): void => {
    if (failure) throw failure;
  };
  const peer = await deps.peers.client(ctx.to, { timeoutMs: 120_000 });
  // Short calls for what must not hang on a cut link: the keepalive and the abort.
  const quickPeer = await deps.peers.client(ctx.to, { timeoutMs: 10_000 });
  let keepalive: NodeJS.Timeout | null = null;
  let watchdog: { stop(): void } | null = null;
  try {
    const target = await deps.jobs.step(jobId, 'prepare', async () => {
      const { diskIds: _d, ...definition } = vm.definition;
      const disks = await deps.diskRepo.byIds(vm.definition.diskIds);
      if (ctx.replication) {
        // A fresh point, then no more cycles: the replica must stay at the point the copy starts from.
        const point = await deps.replication.finalSync(vm.name);
        stats.finalSync = point.bytesSent;
        const row = await deps.replications.find(vm.id);
        if (row === undefined)
          throw new MamoriError('NOT_FOUND', `the replication of ${vm.name} was disabled during the migration`);
        if (row.generation === null)
          throw new MamoriError(
            'VM_INVALID_STATE',
            `the replication of ${vm.name} keeps no bitmap generation to migrate onto`,
          );
        ctx.replication.generation = row.generation;
        ctx.replication.pointId = point.id;
      }
      const t = await peer.request<IncomingTarget>('POST', '/migrations/incoming', {
        definition,
        disks: vm.definition.diskIds.map((id) => ({ sizeBytes: disks.find((d) => d.id === id)!.sizeBytes })),
        ...(ctx.replication ? { replicaPointId: ctx.replication.pointId } : {}),
        // The destination removes its copy by itself once the source has been silent this long.
        leaseSec: Math.max(30, opts.linkTimeoutSec * 3),
      });
      ctx.target = t;
      keepalive = setInterval(
        () => void quickPeer.request('POST', `/migrations/${vm.id}/keepalive`, {}).catch(() => undefined),
        KEEPALIVE_MS,
      );
      await deps.jobs.setContext(MIGRATION_JOB, jobId, ctx);
      const dir = await writeQemuTlsCreds({
        dir: join(deps.paths.vmDir(vm.id), 'mig-tls'),
        site: deps.tls,
        peerCaPem: (await deps.peers.record(ctx.to)).caCertPem,
        endpoint: 'client',
      });
      ctx.tlsId = `${MIGRATION_TLS_ID}-${jobId}`;
      await deps.jobs.setContext(MIGRATION_JOB, jobId, ctx);
      await qmp.execute('object-add', {
        'qom-type': 'tls-creds-x509',
        id: ctx.tlsId,
        dir,
        endpoint: 'client',
        'verify-peer': true,
      });
      return t;
    });
    check();
    watchdog = watchLink(deps.log, qmp, target, opts.linkTimeoutSec, stopWith);
    let deltaPauseMs: number | null = null;
    await deps.jobs.step(jobId, 'mirror', async () => {
      for (const [i, name] of target.exports.entries()) {
        await qmp.execute('blockdev-add', {
          driver: 'nbd',
          'node-name': `mig-tgt${i}`,
          server: { type: 'inet', host: target.host, port: String(target.nbdPort) },
          export: name,
          'tls-creds': ctx.tlsId!,
        });
      }
      if (ctx.replication)
        deltaPauseMs = await copyReplicaDelta(qmp, target.exports.length, ctx.replication.generation, stats);
      else {
        for (const i of target.exports.keys())
          await qmp.execute('blockdev-mirror', {
            'job-id': `mig${i}`,
            device: `disk${i}`,
            target: `mig-tgt${i}`,
            sync: 'full',
            'copy-mode': 'write-blocking',
          });
      }
      await waitMirrorsReady(deps.jobs, qmp, jobId, target.exports.length, check, stats);
    });
    check();
    const info = await deps.jobs.step(jobId, 'migrate', async () => {
      await qmp.execute('migrate-set-capabilities', {
        capabilities: ['events', 'pause-before-switchover', 'return-path'].map((capability) => ({
          capability,
          state: true,
        })),
      });
      await qmp.execute('migrate-set-parameters', {
        'tls-creds': ctx.tlsId!,
        'tls-hostname': target.host,
        'downtime-limit': downtimeMs,
        'max-bandwidth': (mbps ?? 10_000) * 1024 * 1024,
      });
      const preSwitch = new Promise<void>((resolve, reject) => {
        const off = qmp.on('MIGRATION', (ev) => {
          const st = (ev.data as { status: string }).status;
          if (st === 'pre-switchover') {
            off();
            resolve();
          } else if (st === 'failed' || st === 'cancelled') {
            off();
            reject(new MamoriError('QMP_ERROR', `the migration ${st} before switchover`));
          }
        });
        cancelNow.push((why) => {
          off();
          reject(why);
        });
      });
      await qmp.execute('migrate', { uri: `tcp:${target.host}:${target.migrationPort}` });
      const watch = watchProgress(deps.jobs, qmp, jobId, ctx, stats);
      try {
        await preSwitch;
      } finally {
        watch.stop();
      }
      check();
      // The guest is paused now and this is downtime: the mirrors hold every write, and
      // cancelling them after READY leaves the targets consistent. Their ends are awaited as
      // events (polling cost tens of milliseconds here).
      const ended = [...target.exports.keys()].map((i) =>
        qmp
          .waitForEvent('BLOCK_JOB_COMPLETED', { timeoutMs: 10_000, predicate: (ev) => ev.data.device === `mig${i}` })
          .then(
            (ev) => ev.data.offset,
            () => null,
          ),
      );
      for (const i of target.exports.keys()) await qmp.execute('block-job-cancel', { device: `mig${i}` });
      const offsets = await Promise.all(ended);
      if (offsets.some((o) => o === null)) await waitJobsGone(qmp, target.exports.length, stats);
      else
        stats.mirrored = Math.max(
          stats.mirrored,
          offsets.reduce<number>((sum, o) => sum + (o ?? 0), 0),
        );
      await qmp.execute('migrate-continue', { state: 'pre-switchover' });
      return waitMigrationEnd(qmp);
    });
    // From here on the destination has the whole VM: nothing may cut the link on purpose.
    watchdog.stop();
    check();
    if (info.status !== 'completed')
      throw new MamoriError('QMP_ERROR', `the migration ended ${info.status}: ${info['error-desc'] ?? ''}`);
    switched = true;
    ctx.switched = true;
    await deps.jobs.setContext(MIGRATION_JOB, jobId, ctx);
    await deps.jobs.step(jobId, 'switchover', async () => {
      await peer.request('POST', `/migrations/${vm.id}/activate`, {});
    });
    await deps.jobs.step(jobId, 'finish', () => finishMigration(deps, vm.id, ctx));
    const result: MigrationResult = {
      to: ctx.to,
      replicaAware: ctx.replication !== null,
      deltaPauseMs,
      downtimeMs: typeof info.downtime === 'number' ? info.downtime : null,
      totalMs: Date.now() - started,
      ramBytes: info.ram?.transferred ?? 0,
      diskBytes: stats.finalSync + stats.delta + stats.mirrored,
      finalSyncBytes: stats.finalSync,
    };
    await deps.jobs.succeed(jobId, result);
    deps.log.info({ vm: vm.name, ...result }, 'live migration done');
  } catch (thrown) {
    // The first cause wins: a cut link also makes a mirror fail, which says less.
    const e: unknown = failure ?? thrown;
    watchdog?.stop();
    if (!switched)
      await rollBackMigration(deps, vm, ctx, qmp, quickPeer).catch((err: unknown) =>
        deps.log.error({ vm: vm.name, err }, 'rolling back a migration failed'),
      );
    await deps.jobs.fail(jobId, {
      code: (e as { code?: string }).code ?? 'INTERNAL',
      message: (e as Error).message,
    });
    deps.log.warn(
      { vm: vm.name, err: e },
      switched ? 'migration switched over but did not finish' : 'migration failed; the VM runs on at the source',
    );
  } finally {
    if (keepalive) clearInterval(keepalive);
    deps.cancels.delete(vm.id);
  }
}

/**
 * While RAM is copied: what `vm migrate` shows (RAM transferred and remaining, dirty rate,
 * expected downtime), in the job's context, twice a second.
 */
function watchProgress(
  journal: JobJournal,
  qmp: QmpClient,
  jobId: string,
  ctx: MigrationContext,
  stats: { mirrored: number },
): { stop(): void } {
  let stopped = false;
  const tick = async (): Promise<void> => {
    while (!stopped) {
      const m = await qmp.execute('query-migrate', undefined, { timeoutMs: 5_000 }).catch(() => null);
      if (m?.ram && !stopped) {
        const ram = m.ram as {
          transferred: number;
          remaining: number;
          total: number;
          'dirty-pages-rate'?: number;
          'page-size'?: number;
        };
        const live = {
          status: m.status,
          ramTransferred: ram.transferred,
          ramRemaining: ram.remaining,
          ramTotal: ram.total,
          dirtyRateBps: (ram['dirty-pages-rate'] ?? 0) * (ram['page-size'] ?? 4096),
          expectedDowntimeMs: m['expected-downtime'] ?? null,
          diskMirrored: stats.mirrored,
        };
        await journal.setContext(MIGRATION_JOB, jobId, { ...ctx, live });
        await journal.progress(jobId, 0.6 + 0.35 * Math.min(1, ram.total > 0 ? ram.transferred / ram.total : 0));
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  void tick();
  return { stop: () => void (stopped = true) };
}

async function waitMirrorsReady(
  journal: JobJournal,
  qmp: QmpClient,
  jobId: string,
  n: number,
  check: () => void,
  stats: { mirrored: number },
): Promise<void> {
  for (;;) {
    check();
    const jobs = (await qmp.execute('query-block-jobs', undefined, { timeoutMs: 10_000 })).filter((j) =>
      j.device.startsWith('mig'),
    );
    if (jobs.length < n)
      throw new MamoriError(
        'QMP_ERROR',
        'a disk mirror stopped before it was ready (the link or the destination failed)',
      );
    const len = jobs.reduce((s, j) => s + j.len, 0);
    const off = jobs.reduce((s, j) => s + j.offset, 0);
    stats.mirrored = off;
    await journal.progress(jobId, len > 0 ? 0.1 + 0.5 * (off / len) : 0.1);
    if (jobs.every((j) => j.ready)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function waitMigrationEnd(qmp: QmpClient): Promise<QmpMigrationInfo> {
  for (;;) {
    const info = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 });
    if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') return info;
    await new Promise((r) => setTimeout(r, 20));
  }
}

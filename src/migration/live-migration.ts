import { join } from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { QmpMigrationInfo } from '../qemu/qmp-types.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { SiteTls } from '../sites/site-tls.js';
import type { SitePaths } from '../core/site-paths.js';
import { writeQemuTlsCreds } from '../sites/qemu-tls-creds.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { IncomingTarget } from './migration-target.js';
import type { ReplicationService } from '../replication/replication-service.js';
import { LinkWatchdog, abortConnections } from './link-watchdog.js';
import { copyReplicaDelta, removeMigrationBitmaps } from './replica-delta-copy.js';
import { outgoingStateOf, type MigrationContext, type OutgoingState } from './outgoing-state.js';
import type { ReverseReplication } from './reverse-replication.js';

export const MIGRATION_JOB = 'vm-migration';
export const MIGRATION_STEPS = ['prepare', 'mirror', 'migrate', 'switchover', 'finish'] as const;
const TLS_ID = 'mig-tls';
/** Default time without progress after which the link counts as cut. */
export const LINK_TIMEOUT_DEFAULT_SEC = 30;
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

/**
 * Live migration of a running VM to the paired site without shared storage (libvirt's
 * sequence): the destination starts an empty copy waiting for the stream; each disk is
 * mirrored into it over NBD with TLS (write-blocking, so the mirror keeps up with the guest);
 * RAM follows with pre-copy over TLS; at pre-switchover (the guest paused) the mirrors are
 * cancelled, which leaves their targets consistent, and the migration completes. The source
 * QEMU is then quit, never continued: after `completed` QEMU would accept a `cont` and run a
 * second copy on diverging disks.
 * Any failure before `completed` cancels everything here, resumes the guest if the migration
 * had paused it, and asks the destination to remove what it made.
 */
export class LiveMigrations {
  #diskRepo: DiskRepo;
  #replications: ReplicationRepo;
  #groups: ProtectionGroupRepo;
  #vms: VmService;
  #supervisor: VmSupervisor;
  #peers: SitePeers;
  #tls: SiteTls;
  #paths: SitePaths;
  #jobs: JobJournal;
  #log: Logger;
  #cancels = new Map<string, () => void>();
  #replication: ReplicationService;
  /** After a replica-aware migration: the VM here is superseded and the peer replicates it back. */
  #reverse: ReverseReplication;

  constructor(deps: {
    db: Kysely<Database>;
    vms: VmService;
    supervisor: VmSupervisor;
    peers: SitePeers;
    tls: SiteTls;
    paths: SitePaths;
    jobs: JobJournal;
    log: Logger;
    replication: ReplicationService;
    reverse: ReverseReplication;
  }) {
    this.#reverse = deps.reverse;
    this.#replication = deps.replication;
    this.#diskRepo = new DiskRepo(deps.db);
    this.#replications = new ReplicationRepo(deps.db);
    this.#groups = new ProtectionGroupRepo(deps.db);
    this.#vms = deps.vms;
    this.#supervisor = deps.supervisor;
    this.#peers = deps.peers;
    this.#tls = deps.tls;
    this.#paths = deps.paths;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    deps.jobs.registerRecovery(MIGRATION_JOB, (job) => this.#recover(job));
  }

  /** Checks, then starts the migration as a journalled job and returns it at once. */
  async start(
    vmName: string,
    input: { to: string; downtimeLimitMs?: number; bandwidthMbps?: number; linkTimeoutSec?: number },
  ): Promise<Job> {
    const vm = await this.#vms.get(vmName);
    if (vm.state !== 'running')
      throw new MamoriError(
        'VM_INVALID_STATE',
        `VM ${vmName} is ${vm.state}; live migration moves a running VM (a stopped one can be replicated and recovered instead)`,
      );
    const disks = await this.#diskRepo.byIds(vm.definition.diskIds);
    // Refused here, before a job, the peer or QEMU is touched: the device stays with this host.
    for (const d of disks) {
      if (d.kind === 'rdm' && d.rdmMode === 'physical') {
        throw new MamoriError(
          'RDM_PHYSICAL_REFUSED',
          `disk ${d.name} of ${vmName} is a physical-mode raw device mapping: the device stays with this host, so the VM cannot move; detach it first`,
          { details: { disk: d.name, operation: 'live migration' } },
        );
      }
      if (d.shared) {
        throw new MamoriError(
          'DISK_SHARED_REFUSED',
          `disk ${d.name} of ${vmName} is shared with other VMs: it stays with this host and the VMs sharing it, so the VM cannot move; detach it first`,
          { details: { disk: d.name, operation: 'live migration' } },
        );
      }
    }
    const downtime = input.downtimeLimitMs ?? 300;
    if (!Number.isInteger(downtime) || downtime < 10 || downtime > 60_000)
      throw new MamoriError('OUT_OF_RANGE', '--downtime-limit is 10 to 60000 ms');
    const mbps = input.bandwidthMbps;
    if (mbps !== undefined && (!Number.isInteger(mbps) || mbps < 1 || mbps > 100_000))
      throw new MamoriError('OUT_OF_RANGE', '--bandwidth is 1 to 100000 MB/s');
    const linkTimeoutSec = input.linkTimeoutSec ?? LINK_TIMEOUT_DEFAULT_SEC;
    if (!Number.isInteger(linkTimeoutSec) || linkTimeoutSec < 5 || linkTimeoutSec > 3600)
      throw new MamoriError('OUT_OF_RANGE', '--link-timeout is 5 to 3600 s');
    await this.#peers.client(input.to);
    const running = await this.#jobs.list({ kind: MIGRATION_JOB, target: `vm:${vm.id}`, limit: 1 });
    if (running[0]?.state === 'running')
      throw new MamoriError('VM_INVALID_STATE', `VM ${vmName} is already migrating (job ${running[0].id})`);
    const job = await this.#jobs.create(MIGRATION_JOB, `vm:${vm.id}`, [...MIGRATION_STEPS]);
    const rep = await this.#replications.find(vm.id);
    const group = await this.#groups.groupNameOfVm(vm.id);
    const replicaAware = rep !== undefined && rep.peer === input.to;
    const ctx: MigrationContext = {
      vmId: vm.id,
      to: input.to,
      disks: vm.definition.diskIds.length,
      target: null,
      replication: replicaAware
        ? {
            generation: 0,
            pointId: '',
            rpoSeconds: Math.round(rep.rpoMs / 1000),
            keepPoints: rep.keepPoints,
            group: group ?? null,
          }
        : null,
    };
    await this.#jobs.setContext(job.id, ctx);
    void this.#run(job.id, vm, ctx, { downtimeMs: downtime, mbps, linkTimeoutSec }).catch((e: unknown) =>
      this.#log.error({ job: job.id, err: e }, 'migration failed outside its steps'),
    );
    return job;
  }

  /**
   * For the destination, which cannot tell by itself whether a copy that received the whole
   * migration may run: only this side knows whether it switched over or rolled back.
   */
  async outgoingState(peer: string, vmId: string): Promise<OutgoingState> {
    const job = (await this.#jobs.list({ kind: MIGRATION_JOB, target: `vm:${vmId}`, limit: 1 }))[0] ?? null;
    const qmp = this.#supervisor.qmpOf(vmId);
    const status = qmp
      ? ((await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null))?.status ?? null)
      : null;
    return outgoingStateOf(job, status, peer);
  }

  /** Before switchover: stops it; the VM runs on here and the destination removes its copy. */
  cancel(vmName: string): Promise<void> {
    return this.#vms.get(vmName).then((vm) => {
      const c = this.#cancels.get(vm.id);
      if (!c) throw new MamoriError('VM_INVALID_STATE', `VM ${vmName} is not migrating`);
      c();
    });
  }

  async #run(
    jobId: string,
    vm: VmRow,
    ctx: MigrationContext,
    opts: { downtimeMs: number; mbps: number | undefined; linkTimeoutSec: number },
  ): Promise<void> {
    const { downtimeMs, mbps } = opts;
    const qmp = this.#supervisor.qmpOf(vm.id);
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
    this.#cancels.set(vm.id, () =>
      stopWith(new MamoriError('VM_INVALID_STATE', 'the migration was cancelled; the VM runs on at the source')),
    );
    const check = (): void => {
      if (failure) throw failure;
    };
    const peer = await this.#peers.client(ctx.to, { timeoutMs: 120_000 });
    // Short calls for what must not hang on a cut link: the keepalive and the abort.
    const quickPeer = await this.#peers.client(ctx.to, { timeoutMs: 10_000 });
    let keepalive: NodeJS.Timeout | null = null;
    let watchdog: { stop(): void } | null = null;
    try {
      const target = await this.#jobs.step(jobId, 'prepare', async () => {
        const { diskIds: _d, ...definition } = vm.definition;
        const disks = await this.#diskRepo.byIds(vm.definition.diskIds);
        if (ctx.replication) {
          // A fresh point, then no more cycles: the replica must stay at the point the copy starts from.
          const point = await this.#replication.finalSync(vm.name);
          stats.finalSync = point.bytesSent;
          const row = await this.#replications.find(vm.id);
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
        await this.#jobs.setContext(jobId, ctx);
        const dir = await writeQemuTlsCreds({
          dir: join(this.#paths.vmDir(vm.id), 'mig-tls'),
          site: this.#tls,
          peerCaPem: (await this.#peers.record(ctx.to)).caCertPem,
          endpoint: 'client',
        });
        ctx.tlsId = `${TLS_ID}-${jobId}`;
        await this.#jobs.setContext(jobId, ctx);
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
      watchdog = this.#watchLink(qmp, target, opts.linkTimeoutSec, stopWith);
      let deltaPauseMs: number | null = null;
      await this.#jobs.step(jobId, 'mirror', async () => {
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
        await this.#waitMirrorsReady(qmp, jobId, target.exports.length, check, stats);
      });
      check();
      const info = await this.#jobs.step(jobId, 'migrate', async () => {
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
        const watch = this.#watchProgress(qmp, jobId, ctx, stats);
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
        if (offsets.some((o) => o === null)) await this.#waitJobsGone(qmp, target.exports.length, stats);
        else
          stats.mirrored = Math.max(
            stats.mirrored,
            offsets.reduce<number>((sum, o) => sum + (o ?? 0), 0),
          );
        await qmp.execute('migrate-continue', { state: 'pre-switchover' });
        return this.#waitMigrationEnd(qmp);
      });
      // From here on the destination has the whole VM: nothing may cut the link on purpose.
      watchdog.stop();
      check();
      if (info.status !== 'completed')
        throw new MamoriError('QMP_ERROR', `the migration ended ${info.status}: ${info['error-desc'] ?? ''}`);
      switched = true;
      ctx.switched = true;
      await this.#jobs.setContext(jobId, ctx);
      await this.#jobs.step(jobId, 'switchover', async () => {
        await peer.request('POST', `/migrations/${vm.id}/activate`, {});
      });
      await this.#jobs.step(jobId, 'finish', async () => {
        if (ctx.replication) {
          // Quit, never cont; the disks here become the seed of the reversed replication.
          await this.#vms.stop(vm.name, { force: true });
          const r = ctx.replication;
          await this.#reverse.reverse(ctx.to, vm.id, 1, {
            rpoSeconds: r.rpoSeconds,
            keepPoints: r.keepPoints,
            ...(r.group !== null ? { group: r.group } : {}),
          });
        } else {
          // Quit, never cont: the copy at the destination is the VM now.
          await this.#vms.delete(vm.name, { force: true });
        }
      });
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
      await this.#jobs.succeed(jobId, result);
      this.#log.info({ vm: vm.name, ...result }, 'live migration done');
    } catch (thrown) {
      // The first cause wins: a cut link also makes a mirror fail, which says less.
      const e: unknown = failure ?? thrown;
      watchdog?.stop();
      if (!switched)
        await this.#rollBack(vm, ctx, qmp, quickPeer).catch((err: unknown) =>
          this.#log.error({ vm: vm.name, err }, 'rolling back a migration failed'),
        );
      await this.#jobs.fail(jobId, {
        code: (e as { code?: string }).code ?? 'INTERNAL',
        message: (e as Error).message,
      });
      this.#log.warn(
        { vm: vm.name, err: e },
        switched ? 'migration switched over but did not finish' : 'migration failed; the VM runs on at the source',
      );
    } finally {
      if (keepalive) clearInterval(keepalive);
      this.#cancels.delete(vm.id);
    }
  }

  /**
   * From the first mirrored block to `completed`: the bytes mirrored, backed up and sent as
   * RAM, once a second. When none of them has grown for the link timeout the link counts as
   * cut: our connections to the destination are aborted so QEMU fails now instead of in a
   * quarter of an hour, and the migration stops with that reason (then rolls back).
   */
  #watchLink(
    qmp: QmpClient,
    target: IncomingTarget,
    timeoutSec: number,
    stopWith: (why: MamoriError, opts?: { noteOnly?: boolean }) => void,
  ): { stop(): void } {
    const dog = new LinkWatchdog(timeoutSec * 1000);
    let stopped = false;
    const tick = async (): Promise<void> => {
      while (!stopped) {
        const jobs = await qmp.execute('query-block-jobs', undefined, { timeoutMs: 5_000 }).catch(() => null);
        const mig = await qmp.execute('query-migrate', undefined, { timeoutMs: 5_000 }).catch(() => null);
        if (stopped) return;
        if (jobs && mig)
          dog.observe(
            jobs.filter((j) => j.device.startsWith('mig')).reduce((s, j) => s + j.offset, 0) +
              (mig.ram?.transferred ?? 0),
          );
        const quiet = dog.stalledFor();
        if (quiet !== null) {
          stopped = true;
          this.#log.warn(
            { vm: target.vmId, quietMs: quiet },
            'nothing moved to the destination for the link timeout: aborting the connections to it',
          );
          const why = new MamoriError(
            'PEER_UNREACHABLE',
            `the link to the destination is cut: nothing moved for ${Math.round(quiet / 1000)} s (--link-timeout ${timeoutSec}); the migration is rolled back and the VM runs on at the source`,
          );
          // Noted first: the aborted connections make QEMU fail at once, and that failure says less.
          stopWith(why, { noteOnly: true });
          await abortConnections(target.host, [target.nbdPort, target.migrationPort]).catch((err: unknown) =>
            this.#log.error({ err }, 'could not abort the connections to the destination'),
          );
          stopWith(why);
          return;
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
    };
    void tick();
    return { stop: () => void (stopped = true) };
  }

  /**
   * While RAM is copied: what `vm migrate` shows (RAM transferred and remaining, dirty rate,
   * expected downtime), in the job's context, twice a second.
   */
  #watchProgress(qmp: QmpClient, jobId: string, ctx: MigrationContext, stats: { mirrored: number }): { stop(): void } {
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
          await this.#jobs.setContext(jobId, { ...ctx, live });
          await this.#jobs.progress(jobId, 0.6 + 0.35 * Math.min(1, ram.total > 0 ? ram.transferred / ram.total : 0));
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    void tick();
    return { stop: () => void (stopped = true) };
  }

  async #waitMirrorsReady(
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
      await this.#jobs.progress(jobId, len > 0 ? 0.1 + 0.5 * (off / len) : 0.1);
      if (jobs.every((j) => j.ready)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async #waitJobsGone(qmp: QmpClient, n: number, stats: { mirrored: number } = { mirrored: 0 }): Promise<void> {
    for (let i = 0; i < 500; i++) {
      const jobs = (await qmp.execute('query-block-jobs', undefined, { timeoutMs: 10_000 })).filter((j) =>
        j.device.startsWith('mig'),
      );
      if (jobs.length === 0) return;
      stats.mirrored = Math.max(
        stats.mirrored,
        jobs.reduce((sum, j) => sum + j.offset, 0),
      );
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new MamoriError('QMP_TIMEOUT', `${n} disk mirror(s) did not end after cancel`);
  }

  /** After migrate_cancel: the final status, or null when QEMU did not settle within 30 s. */
  async #waitMigrationSettled(qmp: QmpClient): Promise<string | null> {
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      const info = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null);
      const st = info?.status ?? 'none';
      if (st === 'cancelled' || st === 'failed' || st === 'completed' || st === 'none') return st;
      await new Promise((r) => setTimeout(r, 50));
    }
    return null;
  }

  async #waitMigrationEnd(qmp: QmpClient): Promise<QmpMigrationInfo> {
    for (;;) {
      const info = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 });
      if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') return info;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Before switchover: everything made for the migration goes, here and at the destination; the guest runs on. */
  async #rollBack(
    vm: VmRow,
    ctx: MigrationContext,
    qmp: QmpClient | null,
    peer: { request: (m: string, p: string, b?: unknown) => Promise<unknown> },
  ): Promise<void> {
    if (qmp) {
      const mig = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null);
      if (mig?.status === 'completed') {
        // Too late to roll back: the destination has the whole VM; continuing here would run two.
        throw new MamoriError(
          'VM_INVALID_STATE',
          `the migration of ${vm.name} completed; finish it at the destination instead of rolling back`,
        );
      }
      await qmp.execute('migrate_cancel').catch(() => undefined);
      // The migration thread is still using the stream (and its TLS session) while 'cancelling':
      // wait for it to settle before anything it uses goes. It may also have completed meanwhile.
      const settled = await this.#waitMigrationSettled(qmp);
      if (settled === 'completed')
        throw new MamoriError(
          'VM_INVALID_STATE',
          `the migration of ${vm.name} completed while it was being cancelled; finish it at the destination instead of rolling back`,
        );
      for (let i = 0; i < ctx.disks; i++) {
        for (const job of [`mig${i}`, `migd${i}`])
          await qmp.execute('block-job-cancel', { device: job, force: true }).catch(() => undefined);
      }
      await this.#waitJobsGone(qmp, ctx.disks).catch(async () => {
        // A mirror waiting on a write the destination never acknowledges cannot end: cut its connection.
        if (ctx.target) await abortConnections(ctx.target.host, [ctx.target.nbdPort]).catch(() => undefined);
        await this.#waitJobsGone(qmp, ctx.disks).catch(() => undefined);
      });
      await removeMigrationBitmaps(qmp, ctx.disks);
      let nodesGone = true;
      for (let i = 0; i < ctx.disks; i++) {
        await qmp.execute('blockdev-del', { 'node-name': `mig-tgt${i}` }).catch((e: unknown) => {
          // Never added (an early failure) is fine; still in use is not.
          if (!/not found|Cannot find/i.test((e as Error).message)) nodesGone = false;
        });
      }
      // Credentials are freed only when nothing can still use them (a freed TLS object under a
      // live NBD or migration channel would crash QEMU); otherwise they stay, under this
      // migration's own id, so the next migration is not blocked by them.
      if (nodesGone && settled !== null)
        await qmp.execute('object-del', { id: ctx.tlsId ?? TLS_ID }).catch(() => undefined);
      else this.#log.warn({ vm: vm.name }, 'the migration TLS credentials stay in QEMU: something may still use them');
      const status = await qmp.execute('query-status', undefined, { timeoutMs: 5_000 }).catch(() => null);
      // pause-before-switchover paused the guest; nothing switched, so it runs on here.
      if (status && !status.running) await qmp.execute('cont').catch(() => undefined);
    }
    await peer
      .request('POST', `/migrations/${vm.id}/abort`, {})
      .catch((e: unknown) =>
        this.#log.warn(
          { vm: vm.name, err: e },
          'the destination did not confirm the abort; it removes its copy at its next start',
        ),
      );
    // Replica-aware: replication was paused for the migration; it goes on as before.
    if (ctx.replication) await this.#replication.setPaused(vm.name, false).catch(() => undefined);
  }

  /** A migration the server died in: before switchover it is rolled back (the VM ran on, QEMU outlives the server). */
  async #recover(job: Job): Promise<void> {
    const ctx = job.context as MigrationContext | null;
    if (!ctx) return;
    const vm = await this.#vms.repo.findById(ctx.vmId);
    const qmp = this.#supervisor.qmpOf(ctx.vmId);
    // The journal may lag QEMU: a migration that completed after the last step write switched.
    const completed = qmp
      ? (await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null))?.status === 'completed'
      : false;
    const switched =
      completed || job.steps.some((s) => (s.name === 'switchover' || s.name === 'finish') && s.state !== 'pending');
    const peer = await this.#peers.client(ctx.to, { timeoutMs: 30_000 });
    if (switched) {
      await this.#jobs.setContext(job.id, { ...ctx, switched: true });
      // The destination runs the VM (or will, once activated): finish the move.
      await peer.request('POST', `/migrations/${ctx.vmId}/activate`, {}).catch(() => undefined);
      if (vm) await this.#vms.delete(vm.name, { force: true });
      return;
    }
    if (vm) await this.#rollBack(vm, ctx, qmp, peer);
  }
}

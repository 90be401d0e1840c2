import type { StoreHandle } from '../store/store-handle.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { SiteTls } from '../sites/site-tls.js';
import type { SitePaths } from '../core/site-paths.js';
import type { JobJournal, Job, JobFinished, JobRecoveryOutcome, RecoveredResult } from '../jobs/job-journal.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { ReplicationService } from '../replication/replication-service.js';
import { MIGRATION_JOB, outgoingStateOf, type MigrationContext, type OutgoingState } from './outgoing-state.js';
import type { ReverseReplication } from './reverse-replication.js';
import { runOutgoingMigration, type OutgoingMigrationDeps } from './outgoing-migration.js';
import { rollBackMigration } from './migration-rollback.js';
import { finishMigration } from './migration-finish.js';

export { MIGRATION_JOB };
/** Default time without progress after which the link counts as cut. */
export const LINK_TIMEOUT_DEFAULT_SEC = 30;
/** How long a cut migration's finish is tried again before its job fails (the peer may be down). */
const FINISH_RETRY_MS = 10 * 60_000;

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
 * This class checks and starts migrations, answers for them and recovers the ones the server
 * died in; the run itself is runOutgoingMigration, the rollback rollBackMigration.
 */
export class LiveMigrations {
  #diskRepo: DiskRepo;
  #replications: ReplicationRepo;
  #groups: ProtectionGroupRepo;
  #vms: VmService;
  #supervisor: VmSupervisor;
  #peers: SitePeers;
  #jobs: JobJournal;
  #log: Logger;
  /** What each run uses; its cancels map is the operator's way to stop a run. */
  #runDeps: OutgoingMigrationDeps;

  constructor(deps: {
    db: StoreHandle;
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
    this.#diskRepo = new DiskRepo(deps.db);
    this.#replications = new ReplicationRepo(deps.db);
    this.#groups = new ProtectionGroupRepo(deps.db);
    this.#vms = deps.vms;
    this.#supervisor = deps.supervisor;
    this.#peers = deps.peers;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    this.#runDeps = {
      diskRepo: this.#diskRepo,
      replications: this.#replications,
      vms: deps.vms,
      supervisor: deps.supervisor,
      peers: deps.peers,
      tls: deps.tls,
      paths: deps.paths,
      jobs: deps.jobs,
      log: deps.log,
      replication: deps.replication,
      reverse: deps.reverse,
      cancels: new Map(),
    };
    deps.jobs.define(MIGRATION_JOB, (job, ctx) => this.#recover(job, ctx));
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
    const running = await this.#jobs.list({ kind: MIGRATION_JOB.kind, target: `vm:${vm.id}`, limit: 1 });
    if (running[0]?.state === 'running')
      throw new MamoriError('VM_INVALID_STATE', `VM ${vmName} is already migrating (job ${running[0].id})`);
    const job = await this.#jobs.create(MIGRATION_JOB, `vm:${vm.id}`);
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
            continuous: rep.continuous,
          }
        : null,
    };
    await this.#jobs.setContext(MIGRATION_JOB, job.id, ctx);
    void runOutgoingMigration(this.#runDeps, job.id, vm, ctx, { downtimeMs: downtime, mbps, linkTimeoutSec }).catch(
      (e: unknown) => this.#log.error({ job: job.id, err: e }, 'migration failed outside its steps'),
    );
    return job;
  }

  /**
   * For the destination, which cannot tell by itself whether a copy that received the whole
   * migration may run: only this side knows whether it switched over or rolled back.
   */
  async outgoingState(peer: string, vmId: string): Promise<OutgoingState> {
    const job = (await this.#jobs.list({ kind: MIGRATION_JOB.kind, target: `vm:${vmId}`, limit: 1 }))[0] ?? null;
    const qmp = this.#supervisor.qmpOf(vmId);
    const status = qmp
      ? ((await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null))?.status ?? null)
      : null;
    return outgoingStateOf(job, job && this.#jobs.context(MIGRATION_JOB, job), status, peer);
  }

  /** Before switchover: stops it; the VM runs on here and the destination removes its copy. */
  cancel(vmName: string): Promise<void> {
    return this.#vms.get(vmName).then((vm) => {
      const c = this.#runDeps.cancels.get(vm.id);
      if (!c) throw new MamoriError('VM_INVALID_STATE', `VM ${vmName} is not migrating`);
      c();
    });
  }

  /**
   * A migration the server died in: before switchover it is rolled back (the VM ran on, QEMU
   * outlives the server) and the job fails saying so; after it the move is finished as the
   * `finish` step would (the destination's copy is the VM; onto a replica, replication is
   * turned around) and the job succeeds: the VM moved, as asked.
   */
  async #recover(job: Job, ctx: MigrationContext | null): Promise<JobRecoveryOutcome> {
    if (!ctx) return undefined;
    const vm = await this.#vms.repo.findById(ctx.vmId);
    const qmp = this.#supervisor.qmpOf(ctx.vmId);
    const cut = job.steps.find((s) => s.state === 'running')?.name ?? 'start';
    const head = `the site server stopped during this job (step ${cut})`;
    // The journal may lag QEMU: a migration that completed after the last step write switched.
    const completed = qmp
      ? (await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null))?.status === 'completed'
      : false;
    const switched =
      completed || job.steps.some((s) => (s.name === 'switchover' || s.name === 'finish') && s.state !== 'pending');
    const peer = await this.#peers.client(ctx.to, { timeoutMs: 30_000 });
    if (switched) {
      await this.#jobs.setContext(MIGRATION_JOB, job.id, { ...ctx, switched: true });
      // The destination runs the VM (or will, once activated): finish the move.
      await peer.request('POST', `/migrations/${ctx.vmId}/activate`, {}).catch(() => undefined);
      const finished: JobFinished = {
        finished: ctx.replication
          ? `${head} after the migration completed: the move was finished, the VM runs at ${ctx.to} and replicates back here, its old disks the seed`
          : `${head} after the migration completed: the move was finished, the VM runs at ${ctx.to} and its copy here was removed`,
        result: { to: ctx.to, replicaAware: ctx.replication !== null },
      };
      try {
        // What the `finish` step does, whichever part of it the cut left undone.
        await finishMigration(this.#runDeps, ctx.vmId, ctx);
        return finished;
      } catch (e) {
        if (!ctx.replication) throw e;
        // Onto a replica, the local part (the VM quit, superseded, made the seed) is done by
        // now; the peer's replicating back calls this site, which serves only after recovery.
        // The job runs on until it has.
        this.#log.info({ job: job.id, err: e }, 'reverse replication waits for this site to serve');
        void this.#finishWhenServing(job.id, ctx, finished);
        return { takenUp: `the VM runs at ${ctx.to}; replication is turned around once this site serves` };
      }
    }
    if (vm) await rollBackMigration(this.#runDeps, vm, ctx, qmp, peer);
    return `${head} before switchover: the migration was rolled back, the VM runs on here and ${ctx.to} was asked to remove its copy`;
  }

  /**
   * The finish of a replica-aware migration taken up at start, tried again until the peer
   * replicates back (it can once this site listens), then the job succeeds; failed after
   * FINISH_RETRY_MS with what is left. Every part of the finish is safe to repeat.
   */
  async #finishWhenServing(jobId: string, ctx: MigrationContext, finished: JobFinished): Promise<void> {
    const deadline = Date.now() + FINISH_RETRY_MS;
    for (let wait = 1_000; ; wait = Math.min(wait * 2, 15_000)) {
      // Unref'd: a server closing meanwhile is not held open by this wait (its next start takes the job up).
      await new Promise((r) => setTimeout(r, wait).unref());
      try {
        await finishMigration(this.#runDeps, ctx.vmId, ctx);
        const result: RecoveredResult = { recovered: finished.finished, result: finished.result ?? null };
        await this.#jobs.succeed(jobId, result);
        this.#log.info({ job: jobId, vm: ctx.vmId }, 'cut migration finished: replication runs back from the peer');
        return;
      } catch (e) {
        if (Date.now() < deadline) continue;
        this.#log.error({ job: jobId, err: e }, 'cut migration: reverse replication could not be started');
        await this.#jobs
          .fail(jobId, {
            code: (e as { code?: string }).code ?? 'INTERNAL',
            message: `the VM runs at ${ctx.to}, but it does not replicate back here: ${(e as Error).message}; make it replicate here from ${ctx.to} ('mamori replicate enable VM --to SITE --rpo 30s' there, with this site as SITE and its RPO of ${ctx.replication?.rpoSeconds ?? '?'} s)`,
          })
          .catch(() => undefined);
        return;
      }
    }
  }
}

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import type { CycleStats, ReplicationRecord } from '../store/records/replica-record.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { SiteTls } from '../sites/site-tls.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { parseSize } from '../core/names.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { assertLayerable } from '../vms/vm-snapshots.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import { nextCycleAt, parseRpo, rpoStatus, RPO_LIMITS } from './rpo-scheduler.js';
import { CYCLE_STEPS, runReplicationCycle, type CycleJournal, type CycleResult } from './replication-cycle.js';
import { settleFleecingPoint, type FleecingPoint } from './fleecing-point.js';
import { sweepFleecingLeftovers } from './fleecing-machinery.js';
import { sweepOfflineFleecingLeftovers, type OfflineFleecingPoint } from './offline-fleecing-point.js';
import type { Job, JobJournal } from '../jobs/job-journal.js';
import type { IncidentLog } from '../events/incident-log.js';
import { ReplicationIncidents } from './replication-incidents.js';
import type { ReplicaPointView, ReplicaStorage, ReplicaView } from './replica-service.js';
import type { WriteLogReport } from '../guest/writelog-verifier.js';
import { CycleEnds } from './cycle-ends.js';
import type { SupersededHandler } from './superseded-handler.js';
import type { CycleEndListener } from './cycle-end-listener.js';

// CycleStats lives in store/ (issue 20: replications.stats has one codec there); re-exported for callers.
export type { CycleStats } from '../store/records/replica-record.js';

export interface ReplicationStatus {
  vm: string;
  to: string;
  state: string;
  rpoSeconds: number;
  points: number;
  lastPointAt: string | null;
  lagSeconds: number | null;
  rpoViolated: boolean;
  /** When the open RPO-violation incident began; null when the RPO holds. */
  rpoViolatedSince: string | null;
  nextCycleAt: string | null;
  failures: number;
  lastError: string | null;
  lastCycle: CycleStats | null;
  bandwidthBps: number | null;
  /** The replication generation: the dirty bitmap's, raised by each committed cycle; null before the first. */
  generation: number | null;
  /** Storage at the recovery site (points, chain length, bytes), as its last commit reported; null before. */
  replica: ReplicaStorage | null;
}

const MAX_POINTS = 1000;
const KEEP_STATS = 10;
const CYCLE_JOB = 'replication-cycle';
export { RPO_VIOLATED, CYCLE_FAILED, POINT_VERIFY_FAILED } from './replication-incidents.js';

/** What a CycleEndListener hears at the end of each cycle (the metrics count them). */
export interface CycleEnded {
  vmId: string;
  vm: string;
  outcome: 'ok' | 'failed';
  durationMs: number;
  bytesSent: number;
}
/** Finished cycle jobs kept per VM (one cycle every few seconds would fill the table). */
const KEEP_CYCLE_JOBS = 20;

/** What a cut cycle's recovery rule needs: written before the fleecing step, then with the point. */
interface CycleJobContext {
  vmId: string;
  source: 'live' | 'offline';
  nodes: string[];
  workDir: string;
  point: FleecingPoint | OfflineFleecingPoint | null;
}

/**
 * The protected side of replication: which VMs go where, with which RPO, and the timer
 * that runs their cycles. One cycle per VM at a time; the VM's lifecycle lock is not held
 * during a cycle, so a stop or start waits at most for the QMP steps, not the copy.
 */
export class ReplicationService {
  #repo: ReplicationRepo;
  #groups: ProtectionGroupRepo;
  #vms: VmService;
  #supervisor: VmSupervisor;
  #disks: DiskRepo;
  #ends: CycleEnds;
  #peers: SitePeers;
  #tls: SiteTls;
  #paths: SitePaths;
  #log: Logger;
  #jobs: JobJournal;
  #incidents: ReplicationIncidents;
  #lock = new KeyedLock();
  /** VMs whose cycle in flight reads their stopped images through a storage daemon. */
  #offlineInFlight = new Set<string>();
  #timers = new Map<string, NodeJS.Timeout>();
  #next = new Map<string, number>();
  #stopped = false;
  /** Told when a peer says it failed this site's VM over (the VM here is superseded). */
  #superseded: SupersededHandler;
  #cycleEnds: CycleEndListener;

  constructor(deps: {
    db: Kysely<Database>;
    vms: VmService;
    supervisor: VmSupervisor;
    peers: SitePeers;
    tls: SiteTls;
    paths: SitePaths;
    jobs: JobJournal;
    incidents: IncidentLog;
    log: Logger;
    superseded: SupersededHandler;
    cycleEnds: CycleEndListener;
  }) {
    this.#superseded = deps.superseded;
    this.#cycleEnds = deps.cycleEnds;
    this.#jobs = deps.jobs;
    this.#incidents = new ReplicationIncidents({
      incidents: deps.incidents,
      log: deps.log,
      row: (vmId) => this.#row(vmId),
      vmName: async (vmId) => (await this.#vms.repo.findById(vmId))?.name ?? vmId,
    });
    this.#jobs.registerRecovery(CYCLE_JOB, (job) => this.#recoverCycle(job));
    this.#repo = new ReplicationRepo(deps.db);
    this.#groups = new ProtectionGroupRepo(deps.db);
    this.#vms = deps.vms;
    this.#supervisor = deps.supervisor;
    this.#disks = new DiskRepo(deps.db);
    this.#peers = deps.peers;
    this.#tls = deps.tls;
    this.#paths = deps.paths;
    this.#log = deps.log;
    this.#ends = new CycleEnds({
      db: deps.db,
      disks: this.#disks,
      supervisor: deps.supervisor,
      peers: deps.peers,
      paths: deps.paths,
      log: deps.log,
    });
  }

  /**
   * At start: ask each peer whether it promoted a replica of ours while this site was away
   * (a disaster recovery), so superseded VMs are known before anyone starts them. A peer
   * that does not answer is asked again by the next cycle, which it refuses the same way.
   */
  async learnSupersession(): Promise<void> {
    for (const r of await this.#repo.list()) {
      try {
        const peer = await this.#peers.client(r.peer, { timeoutMs: 5_000 });
        const replica = await peer.request<ReplicaView>('GET', `/replicas/${r.replicaId}`);
        if (replica.promotedAt)
          await this.#superseded.markSuperseded(
            r.peer,
            r.vmId,
            replica.failoverGeneration,
            `${r.peer} promoted the replica at ${replica.promotedAt}`,
          );
      } catch (e) {
        this.#log.info(
          { vm: r.vmId, peer: r.peer, err: (e as Error).message },
          'could not ask the peer about failovers; the next cycle will',
        );
      }
    }
  }

  /**
   * seeded (reprotect): the recovery site already holds this VM's old disks under the replica,
   * so the first cycle compares checksums and sends only what differs (generation 0 has no
   * bitmap, which makes that cycle a resync), instead of a full copy.
   */
  async enable(
    vmName: string,
    input: { to: string; rpo: string; points?: number; bandwidth?: string; seeded?: boolean },
  ): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    const rpoMs = parseRpo(String(input.rpo));
    if (rpoMs === null)
      throw new MamoriError(
        'OUT_OF_RANGE',
        `RPO ${JSON.stringify(input.rpo)} is out of range: give ${RPO_LIMITS.minMs / 1000}s to 24h (e.g. 30s, 15m, 4h)`,
      );
    const keep = input.points ?? 24;
    if (!Number.isInteger(keep) || keep < 1 || keep > MAX_POINTS)
      throw new MamoriError('OUT_OF_RANGE', `points must be 1 to ${MAX_POINTS}`);
    const bandwidthBps = input.bandwidth === undefined ? null : parseSize(input.bandwidth);
    const disks = await this.#disks.byIds(replicatedDiskIds(vm.definition));
    if (disks.length === 0) throw new MamoriError('INVALID_INPUT', `VM ${vmName} has no disks to replicate`);
    for (const d of disks) assertLayerable(d, 'host-based replication');
    if (await this.#row(vm.id))
      throw new MamoriError(
        'VM_INVALID_STATE',
        `VM ${vmName} is already replicated; see 'mamori replicate status ${vmName}'`,
      );
    const peer = await this.#peers.client(input.to);
    const ordered = replicatedDiskIds(vm.definition).map((id) => disks.find((d) => d.id === id)!);
    const replica = await peer.request<ReplicaView>('POST', '/replicas', {
      sourceVmId: vm.id,
      vmName,
      keepPoints: keep,
      disks: ordered.map((d, index) => ({ index, sizeBytes: d.sizeBytes })),
    });
    const now = new Date().toISOString();
    await this.#repo.insert({
      vmId: vm.id,
      peer: input.to,
      replicaId: replica.id,
      rpoMs,
      keepPoints: keep,
      state: 'enabled',
      generation: input.seeded === true ? 0 : null,
      createdAt: now,
      updatedAt: now,
      bandwidthBps,
    });
    this.#schedule(vm.id, Date.now());
    return this.status(vmName);
  }

  /**
   * deleteReplica: the recovery site is asked to delete the replica, under the cycle lock and
   * before the row goes, so a refusal there (a VM made from it runs) or an unreachable peer
   * leaves the replication as it was, to retry or disable without it.
   */
  async disable(vmName: string, opts: { deleteReplica?: boolean } = {}): Promise<void> {
    const vm = await this.#vms.get(vmName);
    await this.#require(vm.id, vmName);
    // A protected VM keeps its replica: a plan counts on it (as SRM, unprotect first).
    const group = await this.#groups.groupNameOfVm(vm.id);
    if (group !== undefined) {
      throw new MamoriError(
        'VM_ALREADY_PROTECTED',
        `VM ${vmName} is in protection group ${group}, whose plans recover it from this replica; ` +
          `remove it first with 'mamori group remove ${group} ${vmName}' (or delete the group)`,
        { details: { vm: vmName, group } },
      );
    }
    this.#unschedule(vm.id);
    await this.#lock.run(vm.id, async () => {
      if (opts.deleteReplica === true) {
        const row = await this.#require(vm.id, vmName);
        try {
          const peer = await this.#peers.client(row.peer, { timeoutMs: 120_000 });
          await peer.request('DELETE', `/replicas/${row.replicaId}`);
        } catch (e) {
          if (!isMamoriError(e, 'NOT_FOUND')) {
            void this.#scheduleFromRow(vm.id, Date.now());
            throw e;
          }
        }
      }
      await this.#repo.delete(vm.id);
      await this.#incidents.disabled(vm.id);
      await rm(this.#workDir(vm.id), { recursive: true, force: true });
    });
  }

  async setPaused(vmName: string, paused: boolean): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    await this.#require(vm.id, vmName);
    await this.#repo.setState(vm.id, paused ? 'paused' : 'enabled');
    if (paused) this.#unschedule(vm.id);
    else this.#schedule(vm.id, Date.now());
    await this.#incidents.checkRpo(vm.id);
    return this.status(vmName);
  }

  /** Runs a cycle now and waits for it (after any cycle already running). */
  async syncNow(vmName: string): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    if (row.state === 'paused')
      throw new MamoriError('VM_INVALID_STATE', `replication of ${vmName} is paused; resume it first`);
    await this.#cycle(vm.id, true);
    return this.status(vmName);
  }

  /**
   * The last cycle before the VM's disks change hands (planned migration, failback, live
   * migration onto the replica): replication is paused first, so no scheduled cycle follows,
   * then one cycle runs (a paused replication still runs a manual one) and its point is returned.
   */
  async finalSync(vmName: string): Promise<{ id: string; time: string; bytesSent: number }> {
    await this.setPaused(vmName, true);
    const vm = await this.#vms.get(vmName);
    const before = (await this.#require(vm.id, vmName)).lastPointId;
    await this.#cycle(vm.id, true);
    const row = await this.#require(vm.id, vmName);
    if (row.lastPointId === null || row.lastPointAt === null)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `the replication of ${vmName} has no point yet (${row.lastError ?? 'no cycle yet'})`,
      );
    // What this last cycle sent (none when it failed and the point is the one before).
    const bytesSent = row.lastPointId !== before ? (row.stats.at(-1)?.bytesSent ?? 0) : 0;
    return { id: row.lastPointId, time: row.lastPointAt, bytesSent };
  }

  async status(vmName: string): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    return this.#statusOf(await this.#require(vm.id, vmName), vm.name);
  }

  async statusAll(): Promise<ReplicationStatus[]> {
    const rows = await this.#repo.listWithVmNames();
    return Promise.all(rows.map((r) => this.#statusOf(r, r.vmName)));
  }

  async points(vmName: string): Promise<ReplicaPointView[]> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    return (await (await this.#peers.client(row.peer)).request<ReplicaView>('GET', `/replicas/${row.replicaId}`))
      .points;
  }

  async verify(vmName: string, pointId?: string): Promise<{ point: ReplicaPointView; report: WriteLogReport }> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    const peer = await this.#peers.client(row.peer, { timeoutMs: 300_000 });
    const verified = await peer.request<{ point: ReplicaPointView; report: WriteLogReport }>(
      'POST',
      `/replicas/${row.replicaId}/verify`,
      pointId ? { pointId } : {},
    );
    await this.#incidents.verified({
      vmId: vm.id,
      vmName: vm.name,
      peer: row.peer,
      pointId: verified.point.id,
      report: verified.report,
    });
    return verified;
  }

  /**
   * A VM start waits for its replication: a cycle of the stopped VM holds its images (read
   * through a storage daemon), so it is cut short (its daemon killed: the cycle aborts and
   * keeps its bitmap, nothing is lost) and the start runs under the cycle lock, so the next
   * cycle finds the VM running.
   */
  async aroundVmStart(vmId: string, start: () => Promise<void>): Promise<void> {
    if (this.#offlineInFlight.has(vmId)) {
      this.#log.info({ vm: vmId }, 'cutting short a cycle of the stopped VM: it is being started');
      await sweepOfflineFleecingLeftovers(this.#workDir(vmId));
    }
    await this.#lock.run(vmId, start);
  }

  /** At server start: re-arm the timers of every enabled replication. */
  async start(): Promise<void> {
    for (const vmId of await this.#repo.enabledVmIds()) {
      // As the RPO asks (at once if the lag is already near it); a cycle cut by the server's
      // death was undone by its job's recovery rule before this.
      await this.#scheduleFromRow(vmId, Date.now());
    }
    // Incidents left open by the previous run, and the watches of those still running.
    await this.#incidents.start(await this.#repo.vmIds());
  }

  shutdown(): void {
    this.#stopped = true;
    for (const id of [...this.#timers.keys()]) this.#unschedule(id);
    this.#incidents.shutdown();
  }

  async #cycle(vmId: string, manual: boolean): Promise<void> {
    await this.#lock.run(vmId, async () => {
      const row = await this.#row(vmId);
      if (!row || (row.state !== 'enabled' && !manual)) return;
      const vm = await this.#vms.repo.findById(vmId);
      if (!vm) return;
      const source = await this.#ends.source(
        vm.id,
        replicatedDiskIds(vm.definition),
        vm.definition.guestAgent === true,
      );
      const job = await this.#jobs.create(CYCLE_JOB, `vm:${vmId}`, [...CYCLE_STEPS]);
      const context: CycleJobContext = {
        vmId,
        source: source.kind,
        workDir: this.#workDir(vm.id),
        point: null,
        nodes: source.kind === 'live' ? source.nodes : source.disks.map((d) => d.id),
      };
      await this.#jobs.setContext(job.id, context);
      if (source.kind === 'offline') this.#offlineInFlight.add(vmId);
      const started = Date.now();
      try {
        const result = await runReplicationCycle({
          source,
          workDir: this.#workDir(vm.id),
          previousGeneration: row.generation,
          remote: await this.#ends.remote(row),
          tls: {
            peerCaPem: (await this.#peers.record(row.peer)).caCertPem,
            clientCertPem: this.#tls.clientCertPem,
            clientKeyPem: this.#tls.clientKeyPem,
          },
          ...(row.bandwidthBps ? { bandwidthBps: row.bandwidthBps } : {}),
          journal: this.#journalFor(job.id, context, row),
          seed:
            row.generation === 0
              ? await this.#ends.seedSides(row, source.kind === 'live' ? source.nodes.length : source.disks.length)
              : null,
        });
        await this.#jobs.succeed(job.id, {
          point: result.point.id,
          mode: result.mode,
          bytesSent: result.bytesSent,
          durationMs: result.durationMs,
        });
        this.#log.info(
          {
            vm: vm.name,
            jobId: job.id,
            point: result.point.id,
            mode: result.mode,
            bytesSent: result.bytesSent,
            ms: result.durationMs,
          },
          'replication cycle done',
        );
        this.#cycleEnds.cycleEnded({
          vmId,
          vm: vm.name,
          outcome: 'ok',
          durationMs: Date.now() - started,
          bytesSent: result.bytesSent,
        });
        await this.#incidents.cycleSucceeded(vmId, vm.name);
      } catch (e) {
        const message = (e as Error).message;
        const code = (e as { code?: string }).code ?? 'INTERNAL';
        await this.#jobs.fail(job.id, { code, message });
        if (isMamoriError(e, 'REPLICA_PROMOTED')) {
          // The recovery site failed this VM over: the copy here is superseded (split-brain safety).
          const generation = Number((e.details as { generation?: unknown } | undefined)?.generation ?? 1);
          await this.#superseded
            .markSuperseded(row.peer, vmId, generation, message)
            .catch((err: unknown) =>
              this.#log.error({ vm: vm.name, err }, 'could not record that the VM was superseded'),
            );
        }
        await this.#repo.recordFailure(vmId, row.failures + 1, message);
        this.#log.warn(
          { vm: vm.name, jobId: job.id, err: e },
          'replication cycle failed; the last good point is kept and the cycle will be retried',
        );
        this.#cycleEnds.cycleEnded({
          vmId,
          vm: vm.name,
          outcome: 'failed',
          durationMs: Date.now() - started,
          bytesSent: 0,
        });
        await this.#incidents.cycleFailed({ vmId, vmName: vm.name, peer: row.peer, jobId: job.id, code, message });
        if (manual) throw e;
      } finally {
        this.#offlineInFlight.delete(vmId);
        await this.#jobs.prune(CYCLE_JOB, `vm:${vmId}`, KEEP_CYCLE_JOBS).catch(() => undefined);
        if (!this.#stopped) void this.#scheduleFromRow(vmId, Date.now());
      }
    });
  }

  /** Journals the cycle's steps; records the new generation and figures as soon as the peer committed. */
  #journalFor(jobId: string, context: CycleJobContext, row: ReplicationRecord): CycleJournal {
    return {
      step: (name, fn) => this.#jobs.step(jobId, name, fn),
      pointMade: (point) => this.#jobs.setContext(jobId, { ...context, point }),
      committed: async (result) => {
        const stats: CycleStats[] = [
          ...row.stats,
          {
            at: result.point.time,
            mode: result.mode,
            bytesSent: result.bytesSent,
            bytesChanged: result.bytesChanged,
            durationMs: result.durationMs,
            throughputBps: result.durationMs > 0 ? Math.round((result.bytesSent * 1000) / result.durationMs) : 0,
            ...(result.point.storage ? { replica: result.point.storage } : {}),
          },
        ].slice(-KEEP_STATS);
        await this.#repo.recordPoint(row.vmId, {
          generation: result.generation,
          pointAt: result.point.time,
          pointId: result.point.id,
          stats,
        });
        await this.#incidents.checkRpo(row.vmId);
      },
    };
  }

  /**
   * The recovery rule of a cycle the server died in. The generation on record says whether
   * the recovery site committed the point (it is recorded right after): then the source moves
   * on to the new bitmap, otherwise it keeps the old one, which covers every change since the
   * last good point. Either way the fleecing machinery goes, and the peer's staging with it.
   */
  async #recoverCycle(job: Job): Promise<void> {
    const ctx = job.context as CycleJobContext | null;
    if (ctx === null) return;
    const row = await this.#row(ctx.vmId);
    const qmp = this.#supervisor.qmpOf(ctx.vmId);
    if (ctx.point === null) {
      if (ctx.source === 'offline') await sweepOfflineFleecingLeftovers(ctx.workDir);
      else if (qmp)
        await sweepFleecingLeftovers(qmp, {
          nodes: ctx.nodes,
          workDir: ctx.workDir,
          nbdSocket: join(ctx.workDir, 'nbd.sock'),
        });
    } else {
      const outcome = row?.generation === ctx.point.generation ? 'complete' : 'abort';
      await settleFleecingPoint(ctx.point, ctx.point.kind === 'live' ? qmp : null, outcome);
      this.#log.warn(
        { jobId: job.id, vm: ctx.vmId, outcome },
        'settled the fleecing point of a cycle cut by a server restart',
      );
    }
    // Best effort and not awaited: an unreachable peer must not hold up the server's start;
    // the peer discards its staging at the next cycle anyway.
    if (row)
      void this.#ends
        .remote(row)
        .then((r) => r.abortCycle())
        .catch(() => undefined);
  }

  async #scheduleFromRow(vmId: string, now: number): Promise<void> {
    const row = await this.#row(vmId);
    if (!row || row.state !== 'enabled') return;
    const at = nextCycleAt(
      {
        rpoMs: row.rpoMs,
        lastPointAt: row.lastPointAt ? Date.parse(row.lastPointAt) : null,
        recentCycleMs: row.stats.map((s) => s.durationMs),
        failures: row.failures,
        lastAttemptEndedAt: now,
      },
      now,
    );
    this.#schedule(vmId, at);
  }

  #schedule(vmId: string, at: number): void {
    this.#unschedule(vmId);
    if (this.#stopped) return;
    this.#next.set(vmId, at);
    const t = setTimeout(() => void this.#cycle(vmId, false).catch(() => undefined), Math.max(0, at - Date.now()));
    t.unref();
    this.#timers.set(vmId, t);
  }

  #unschedule(vmId: string): void {
    const t = this.#timers.get(vmId);
    if (t) clearTimeout(t);
    this.#timers.delete(vmId);
    this.#next.delete(vmId);
  }

  async #statusOf(r: ReplicationRecord, vmName: string): Promise<ReplicationStatus> {
    const now = Date.now();
    const lastAt = r.lastPointAt ? Date.parse(r.lastPointAt) : null;
    const s = rpoStatus({ rpoMs: r.rpoMs, lastPointAt: lastAt }, now);
    const stats = r.stats;
    const next = this.#next.get(r.vmId);
    return {
      vm: vmName,
      to: r.peer,
      state: r.state,
      rpoSeconds: r.rpoMs / 1000,
      points: r.keepPoints,
      lastPointAt: r.lastPointAt,
      lagSeconds: s.lagMs === null ? null : Math.round(s.lagMs / 100) / 10,
      rpoViolated: s.violated,
      rpoViolatedSince: await this.#incidents.rpoViolatedSince(r.vmId),
      nextCycleAt: next ? new Date(next).toISOString() : null,
      failures: r.failures,
      lastError: r.lastError,
      lastCycle: stats.at(-1) ?? null,
      bandwidthBps: r.bandwidthBps,
      generation: r.generation,
      replica: [...stats].reverse().find((c) => c.replica !== undefined)?.replica ?? null,
    };
  }

  #workDir(vmId: string): string {
    return join(this.#paths.vmDir(vmId), 'replication');
  }

  async #row(vmId: string): Promise<ReplicationRecord | undefined> {
    return this.#repo.find(vmId);
  }

  async #require(vmId: string, vmName: string): Promise<ReplicationRecord> {
    const r = await this.#row(vmId);
    if (!r)
      throw new MamoriError(
        'NOT_FOUND',
        `VM ${vmName} is not replicated; enable it with 'mamori replicate enable ${vmName} --to SITE --rpo 30s'`,
      );
    return r;
  }
}

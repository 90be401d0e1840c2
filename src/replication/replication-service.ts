import { rm } from 'node:fs/promises';
import type { JournalCheckpoint } from '../cdp/recovery-journals.js';
import type { StoreHandle } from '../store/store-handle.js';
import { ReplicationRepo, type ReplicationSummary } from '../store/repos/replication-repo.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import type { ReplicationRecord } from '../store/records/replica-record.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { WireCompressionMode } from '../sites/compressed-stream.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { parseSize } from '../core/names.js';
import { assertLayerable } from '../vms/vm-snapshots.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import { parseRpo, RPO_LIMITS } from './rpo-scheduler.js';
import type { JobJournal } from '../jobs/job-journal.js';
import type { IncidentLog } from '../events/incident-log.js';
import { ReplicationIncidents } from './replication-incidents.js';
import type { ReplicaPointView, ReplicaView } from './replica-service.js';
import type { WriteLogReport } from '../guest/writelog-verifier.js';
import { CycleEnds } from './cycle-ends.js';
import { CycleRunner } from './cycle-runner.js';
import { SiteScheduler } from './site-scheduler.js';
import type { LinkInput, LinkView } from './peer-links.js';
import type { SupersededHandler } from './superseded-handler.js';
import type { CycleEndListener } from './cycle-end-listener.js';
import { ContinuousReplication } from './continuous-replication.js';
import { replicationStatusOf, type ReplicationStatus } from './replication-status.js';
import { CONTINUOUS_DEFAULT_RPO, continuousSettings } from './continuous-settings.js';

export type { ReplicationStatus } from './replication-status.js';
// CycleStats lives in store/ (issue 20: replications.stats has one codec there); re-exported for callers.
export type { CycleStats } from '../store/records/replica-record.js';

/** The final sync's cycle is tried this many times, waiting 2 s, then 4 s, between tries. */
const FINAL_SYNC_ATTEMPTS = 3;
const FINAL_SYNC_RETRY_MS = 2_000;

const MAX_POINTS = 1000;
/** Points a replica keeps unless `--points` says otherwise. */
export const DEFAULT_KEEP_POINTS = 24;
export { RPO_VIOLATED, CYCLE_FAILED, POINT_VERIFY_FAILED } from './replication-incidents.js';

/**
 * The protected side of replication: which VMs go where, with which RPO, and the timer
 * that runs their cycles (CycleRunner runs each one). One cycle per VM at a time; the VM's
 * lifecycle lock is not held during a cycle, so a stop or start waits at most for the QMP
 * steps, not the copy.
 */
export class ReplicationService {
  #repo: ReplicationRepo;
  #groups: ProtectionGroupRepo;
  #vms: VmService;
  #disks: DiskRepo;
  #cycles: CycleRunner;
  #peers: SitePeers;
  #log: Logger;
  #incidents: ReplicationIncidents;
  #scheduler: SiteScheduler;
  /** Told when a peer says it failed this site's VM over (the VM here is superseded). */
  #superseded: SupersededHandler;
  #continuous: ContinuousReplication;

  constructor(deps: {
    db: StoreHandle;
    vms: VmService;
    supervisor: VmSupervisor;
    peers: SitePeers;
    /** How cycle streams are sent: read once at start (serve-options), not per cycle. */
    compression: WireCompressionMode;
    /** Journal a continuous VM holds for a cut link before its session breaks (default 1 GiB). */
    cdpBacklogBytes?: number | undefined;
    paths: SitePaths;
    jobs: JobJournal;
    incidents: IncidentLog;
    log: Logger;
    superseded: SupersededHandler;
    cycleEnds: CycleEndListener;
  }) {
    this.#superseded = deps.superseded;
    this.#incidents = new ReplicationIncidents({
      incidents: deps.incidents,
      log: deps.log,
      row: (vmId) => this.#row(vmId),
      journalAt: (vmId) => this.#continuous.shippedAtMs(vmId),
      vmName: async (vmId) => (await this.#vms.repo.findById(vmId))?.name ?? vmId,
    });
    this.#repo = new ReplicationRepo(deps.db);
    this.#groups = new ProtectionGroupRepo(deps.db);
    this.#vms = deps.vms;
    this.#disks = new DiskRepo(deps.db);
    this.#peers = deps.peers;
    this.#log = deps.log;
    this.#cycles = new CycleRunner({
      repo: this.#repo,
      ends: new CycleEnds({
        db: deps.db,
        disks: this.#disks,
        supervisor: deps.supervisor,
        peers: deps.peers,
        paths: deps.paths,
        log: deps.log,
      }),
      vms: deps.vms,
      supervisor: deps.supervisor,
      paths: deps.paths,
      jobs: deps.jobs,
      incidents: this.#incidents,
      log: deps.log,
      superseded: deps.superseded,
      cycleEnds: deps.cycleEnds,
      ran: (vmId) => void this.#scheduler.fromRow(vmId, Date.now()),
      link: (row) => this.#scheduler.sender(row),
      compression: deps.compression,
    });
    this.#scheduler = new SiteScheduler({
      repo: this.#repo,
      peers: deps.peers,
      incidents: this.#incidents,
      log: deps.log,
      // While a VM's journal streams, it is the VM's protection: its scheduled cycles wait, and
      // come due again when the session ends.
      run: async (vmId) => (this.#continuous.active(vmId) ? undefined : this.#cycles.run(vmId, false)),
      vmName: async (vmId) => (await this.#vms.repo.findById(vmId))?.name ?? vmId,
    });
    this.#continuous = new ContinuousReplication({
      repo: this.#repo,
      vms: deps.vms,
      supervisor: deps.supervisor,
      peers: deps.peers,
      incidents: deps.incidents,
      log: deps.log,
      compression: deps.compression,
      workDir: (vmId) => this.#cycles.workDir(vmId),
      cycle: async (vmId) => {
        const row = await this.#require(vmId, vmId);
        await this.#scheduler.runNow(vmId, row.peer, () => this.#cycles.run(vmId, true));
        const after = await this.#require(vmId, vmId);
        if (after.lastPointId === null || after.failures > 0)
          throw new Error(`the cycle before the journal failed: ${after.lastError ?? 'no point'}`);
      },
      exclusive: (vmId, fn) => this.#cycles.exclusive(vmId, fn),
      cyclesDue: (vmId) => this.#scheduler.at(vmId, Date.now()),
      groups: () => this.#groups.groupNamesByVm(),
      agentSocket: (vmId) => deps.paths.vmRuntime(vmId).guestAgentSocket,
      ...(deps.cdpBacklogBytes === undefined ? {} : { maxBacklogBytes: deps.cdpBacklogBytes }),
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
    input: {
      to: string;
      rpo?: string;
      points?: number;
      bandwidth?: string;
      seeded?: boolean;
      continuous?: boolean;
      checkpoint?: string;
      journal?: string;
      appCheckpoint?: string;
    },
  ): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    const continuous = continuousSettings(input, vm.definition.guestAgent === true);
    if (input.rpo === undefined && continuous === null)
      throw new MamoriError('INVALID_INPUT', 'give an RPO (--rpo 30s), or --continuous');
    const rpo = input.rpo ?? CONTINUOUS_DEFAULT_RPO;
    const rpoMs = parseRpo(String(rpo));
    if (rpoMs === null)
      throw new MamoriError(
        'OUT_OF_RANGE',
        `RPO ${JSON.stringify(rpo)} is out of range: give ${RPO_LIMITS.minMs / 1000}s to 24h (e.g. 30s, 15m, 4h)`,
      );
    const keep = input.points ?? DEFAULT_KEEP_POINTS;
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
      continuous,
    });
    this.#scheduler.at(vm.id, Date.now());
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
    this.#scheduler.cancel(vm.id);
    await this.#continuous.forget(vm.id);
    this.#scheduler.cancel(vm.id);
    await this.#cycles.exclusive(vm.id, async () => {
      if (opts.deleteReplica === true) {
        const row = await this.#require(vm.id, vmName);
        try {
          const peer = await this.#peers.client(row.peer, { timeoutMs: 120_000 });
          await peer.request('DELETE', `/replicas/${row.replicaId}`);
        } catch (e) {
          if (!isMamoriError(e, 'NOT_FOUND')) {
            void this.#scheduler.fromRow(vm.id, Date.now());
            throw e;
          }
        }
      }
      await this.#repo.delete(vm.id);
      await this.#incidents.disabled(vm.id);
      await rm(this.#cycles.workDir(vm.id), { recursive: true, force: true });
    });
  }

  async setPaused(vmName: string, paused: boolean): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    await this.#require(vm.id, vmName);
    await this.#repo.setState(vm.id, paused ? 'paused' : 'enabled');
    if (paused) {
      await this.#continuous.end(vm.id);
      this.#scheduler.cancel(vm.id);
    } else this.#scheduler.at(vm.id, Date.now());
    await this.#incidents.checkRpo(vm.id);
    return this.status(vmName);
  }

  /** Runs a cycle now and waits for it (after any cycle already running). */
  async syncNow(vmName: string): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    if (row.state === 'paused')
      throw new MamoriError('VM_INVALID_STATE', `replication of ${vmName} is paused; resume it first`);
    // A cycle's fleecing cannot run beside the journal's tap (one block job per disk): the
    // session ends, and the next begins over this cycle's point.
    await this.#continuous.end(vm.id);
    await this.#scheduler.runNow(vm.id, row.peer, () => this.#cycles.run(vm.id, true));
    return this.status(vmName);
  }

  /**
   * The last cycle before the VM's disks change hands (planned migration, failback, live
   * migration onto the replica): replication is paused first, so no scheduled cycle follows,
   * then one cycle runs (a paused replication still runs a manual one) and its point is returned.
   * A failed cycle is tried again (a cut link, a busy recovery site); if none succeeds,
   * FINAL_SYNC_FAILED, naming the cycle's error, and replication as it was before.
   */
  async finalSync(vmName: string): Promise<{ id: string; time: string; bytesSent: number }> {
    const vm = await this.#vms.get(vmName);
    const was = await this.#require(vm.id, vmName);
    await this.setPaused(vmName, true);
    let row = was;
    let error = 'the cycle made no point';
    for (let attempt = 1; attempt <= FINAL_SYNC_ATTEMPTS; attempt++) {
      if (attempt > 1) await new Promise((r) => setTimeout(r, FINAL_SYNC_RETRY_MS * (attempt - 1)));
      try {
        await this.#scheduler.runNow(vm.id, was.peer, () => this.#cycles.run(vm.id, true));
      } catch (e) {
        // The VM's own state ends it at once: a superseded VM, or one gone or replicated no more.
        if (isMamoriError(e, 'REPLICA_PROMOTED') || isMamoriError(e, 'VM_NOT_FOUND')) throw e;
        error = (e as Error).message;
      }
      row = await this.#require(vm.id, vmName);
      if (row.lastPointId !== null && row.lastPointAt !== null && row.lastPointId !== was.lastPointId)
        return { id: row.lastPointId, time: row.lastPointAt, bytesSent: row.stats.at(-1)?.bytesSent ?? 0 };
      this.#log.warn({ vm: vmName, attempt, error }, 'the final replication cycle failed');
    }
    if (was.state !== 'paused') await this.setPaused(vmName, false);
    throw new MamoriError(
      'FINAL_SYNC_FAILED',
      `the last replication cycle of ${vmName} failed ${FINAL_SYNC_ATTEMPTS} times (${error}); ` +
        `nothing was handed over, as the replica's newest point (${row.lastPointAt ?? 'none'}) lacks the writes since. ` +
        'Fix the link or the recovery site and run again, or run a disaster recovery knowing those writes are lost',
      { details: { vm: vmName, lastPointAt: row.lastPointAt, error } },
    );
  }

  async status(vmName: string): Promise<ReplicationStatus> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    const replica = [...row.stats].reverse().find((c) => c.replica !== undefined)?.replica ?? null;
    const summary = { ...row, vmName: vm.name, lastCycle: row.stats.at(-1) ?? null, replica };
    return this.#statusOf(summary, await this.#incidents.rpoViolatedSince(row.vmId));
  }

  async statusAll(): Promise<ReplicationStatus[]> {
    // The open RPO incidents in one query, not one per VM: 1,000 replications made 1,001
    // round trips (bench/store).
    const [rows, violatedSince] = await Promise.all([
      this.#repo.listSummaries(),
      this.#incidents.rpoViolatedSinceAll(),
    ]);
    return rows.map((r) => this.#statusOf(r, violatedSince.get(r.vmId) ?? null));
  }

  async points(vmName: string): Promise<ReplicaPointView[]> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    return (await (await this.#peers.client(row.peer)).request<ReplicaView>('GET', `/replicas/${row.replicaId}`))
      .points;
  }

  /** A continuous replica's points in time within a range (µs since the epoch), from the recovery site. */
  async checkpoints(vmName: string, range: { fromUs?: number; toUs?: number }): Promise<JournalCheckpoint[]> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    const query = new URLSearchParams();
    if (range.fromUs !== undefined) query.set('from', new Date(range.fromUs / 1000).toISOString());
    if (range.toUs !== undefined) query.set('to', new Date(range.toUs / 1000).toISOString());
    const q = query.toString();
    return (await this.#peers.client(row.peer)).request<JournalCheckpoint[]>(
      'GET',
      `/replicas/${row.replicaId}/checkpoints${q === '' ? '' : `?${q}`}`,
    );
  }

  /** The write-log verifier at the recovery site: on a point, or (`atUs`) on a continuous replica at a point in time. */
  async verify(
    vmName: string,
    pointId?: string,
    atUs?: number,
  ): Promise<{ point: ReplicaPointView; report: WriteLogReport }> {
    const vm = await this.#vms.get(vmName);
    const row = await this.#require(vm.id, vmName);
    const peer = await this.#peers.client(row.peer, { timeoutMs: 300_000 });
    const verified = await peer.request<{ point: ReplicaPointView; report: WriteLogReport }>(
      'POST',
      `/replicas/${row.replicaId}/verify`,
      {
        ...(pointId === undefined ? {} : { pointId }),
        ...(atUs === undefined ? {} : { at: new Date(atUs / 1000).toISOString() }),
      },
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

  /** The VM start gate (VmStartGate): a start waits for the VM's cycle; see CycleRunner.aroundVmStart. */
  async aroundVmStart(vmId: string, start: () => Promise<void>): Promise<void> {
    await this.#cycles.aroundVmStart(vmId, start);
  }

  /**
   * Sets the replication budget of the link to a peer (bandwidth cap, its schedule, cycles
   * in flight); cycles on the link read the new rate at once.
   */
  async setLink(peer: string, input: LinkInput): Promise<LinkView & { peer: string }> {
    return { peer, ...(await this.#scheduler.setLink(peer, input)) };
  }

  /** At server start: re-arm the timers of every enabled replication. */
  async start(): Promise<void> {
    // Taps a killed server left go first: no cycle can fleece a disk beside one.
    await this.#continuous.start();
    // As the RPO asks (at once if the lag is already near it); a cycle cut by the server's
    // death was undone by its job's recovery rule before this.
    await this.#scheduler.start();
    // Incidents left open by the previous run, and the watches of those still running.
    await this.#incidents.start(await this.#repo.vmIds());
  }

  /** Cycles stop being started; journal sessions end (their taps leave the VMs, which run on). */
  async shutdown(): Promise<void> {
    this.#scheduler.stop();
    this.#incidents.shutdown();
    await this.#continuous.shutdown();
  }

  #statusOf(r: ReplicationSummary, rpoViolatedSince: string | null): ReplicationStatus {
    return replicationStatusOf(r, {
      rpoViolatedSince,
      nextCycleAt: this.#scheduler.nextAt(r.vmId),
      queue: this.#scheduler.place(r.vmId),
      journal: this.#continuous.status(r.vmId),
      journalAt: this.#continuous.shippedAtMs(r.vmId),
    });
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

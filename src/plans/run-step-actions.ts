import type { Logger } from '../core/logger.js';
import { MamoriError } from '../core/mamori-error.js';
import { PEER_PROBE_MS, peerIsGone } from './peer-gone.js';
import { runProcess } from '../core/run-process.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { ReplicaService } from '../replication/replica-service.js';
import type { VmService } from '../vms/vm-service.js';
import { powerOnAndWait, waitGuestIp } from './vm-heartbeat.js';
import type { ResolvedPlan } from './plan-service.js';
import type { PreparedFailover } from '../site-roles/protected-site.js';
import type { PlanRun } from './run-journal.js';
import type { PlannedStep } from './run-steps.js';
import type { VmRecovery } from './vm-recovery.js';
import type { ReplicationService, ReplicationStatus } from '../replication/replication-service.js';
import type { ReplicaSeeding } from '../site-roles/replica-seeding.js';
import type { PeerRecovery, PeerRecoveredVm } from '../site-roles/peer-recovery.js';
import type { ArrayRunActions } from '../array-groups/array-run-actions.js';
import type { PeerContact } from '../sites/peer-watch.js';
import { dataLossBasis, dataLossBounds, noDataLoss } from './data-loss-bounds.js';

/** Array snapshots carry their time in whole seconds (ZFS `creation`): the point is somewhere in that second. */
const ARRAY_POINT_PRECISION_SEC = 1;

export interface StepContext {
  run: PlanRun;
  plan: ResolvedPlan;
  save(): Promise<void>;
  waitPrompt(message: string): Promise<void>;
}

export interface StepOutcome {
  skipped?: boolean;
  message?: string;
}

/**
 * What each kind of run step does. Every action is idempotent, which is its recovery rule:
 * a step cut by a crash is simply run again by `plan resume` —
 *  - cleanup-vm: removing a VM that is gone is a no-op;
 *  - shutdown: the protected site stops the VM if it runs, then syncs (again);
 *  - promote: promoting a promoted replica returns its generation;
 *  - recover: the VM this run made for that protected VM is found, never made twice;
 *  - power-on: a running VM is not started again, only waited for;
 *  - command: run again (plan commands must be safe to repeat, as SRM's callouts);
 *  - prompt: shown again.
 */
export class RunStepActions {
  #vms: VmService;
  #replicas: ReplicaService;
  #peers: SitePeers;
  #recovery: VmRecovery;
  #log: Logger;
  #replication: ReplicationService;
  #seeding: ReplicaSeeding;
  #peerRecovery: PeerRecovery;
  #markSuperseded: (peer: string, vmId: string, generation: number, reason: string) => Promise<void>;
  #arrays: ArrayRunActions;
  #peerContact: (peer: string) => PeerContact | null;

  constructor(deps: {
    vms: VmService;
    replicas: ReplicaService;
    peers: SitePeers;
    recovery: VmRecovery;
    log: Logger;
    replication: ReplicationService;
    seeding: ReplicaSeeding;
    peerRecovery: PeerRecovery;
    markSuperseded: (peer: string, vmId: string, generation: number, reason: string) => Promise<void>;
    arrays: ArrayRunActions;
    /** The peer watch's view of a paired site, for the data-loss bound; absent: the run's start stands in. */
    peerContact?: (peer: string) => PeerContact | null;
  }) {
    this.#arrays = deps.arrays;
    this.#peerContact = deps.peerContact ?? (() => null);
    this.#replication = deps.replication;
    this.#seeding = deps.seeding;
    this.#peerRecovery = deps.peerRecovery;
    this.#markSuperseded = deps.markSuperseded;
    this.#vms = deps.vms;
    this.#replicas = deps.replicas;
    this.#peers = deps.peers;
    this.#recovery = deps.recovery;
    this.#log = deps.log;
  }

  async run(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    switch (step.kind) {
      case 'array-test-start':
      case 'array-test-stop':
      case 'array-prepare-failover':
      case 'array-failover':
      case 'array-prepare-reverse':
      case 'array-reverse':
        return this.#arrays.run(step, ctx);
      case 'cleanup-vm':
        await this.#recovery.remove(step.vmId!);
        return {};
      case 'shutdown':
        return this.#shutdown(step, ctx);
      case 'promote':
        return this.#promote(step, ctx);
      case 'recover':
        return this.#recover(step, ctx);
      case 'power-on':
        return this.#powerOn(step, ctx);
      case 'command':
        return this.#command(step, ctx);
      case 'seed-peer':
        await (
          await this.#peer(ctx, 30_000)
        ).request('POST', `/protection/vms/${encodeURIComponent(vmOf(ctx.plan, step.vm!).vm.id)}/seed-replica`, {});
        return { message: `${ctx.plan.peer} turned its superseded copy into the seed` };
      case 'replicate':
        return this.#replicate(step, ctx);
      case 'shutdown-local':
        return this.#shutdownLocal(step, ctx);
      case 'promote-peer':
        return this.#promotePeer(step, ctx);
      case 'recover-peer':
        return this.#recoverPeer(step, ctx);
      case 'seed-local': {
        const local = await this.#localVm(ctx, step.vm!);
        if (local === null) return { message: 'already seeded' };
        await this.#seeding.seed(ctx.plan.peer, local.id);
        return { message: `this site's copy is now the seed of ${ctx.plan.peer}'s replication` };
      }
      case 'replicate-peer':
        return this.#replicatePeer(step, ctx);
      case 'prompt': {
        const s = ctx.plan.spec.steps[step.planStep!]!;
        if (s.action.kind !== 'prompt') throw new Error('step is not a prompt');
        await ctx.waitPrompt(s.action.message);
        return { message: 'continued' };
      }
    }
  }

  /** The VM a planned or disaster run of this plan recovered here for a protected VM. */
  async #localVm(ctx: StepContext, vmName: string): Promise<{ id: string; name: string } | null> {
    const v = vmOf(ctx.plan, vmName);
    return (await this.#vms.repo.findById(v.vm.id)) ?? null;
  }

  async #peer(ctx: StepContext, timeoutMs: number) {
    return this.#peers.client(ctx.plan.peer, { timeoutMs });
  }

  async #replicate(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const local = await this.#localVm(ctx, v.vm.name);
    if (local === null)
      throw new MamoriError(
        'VM_NOT_FOUND',
        `${v.vm.name} was not recovered at this site (run a planned or disaster recovery first)`,
      );
    const status = await this.#peerRecovery.replicateBack(ctx.plan.peer, local.id, {
      rpoSeconds: v.vm.rpoSeconds,
      keepPoints: v.vm.keepPoints,
      ...(v.vm.continuous ? { continuous: v.vm.continuous } : {}),
      ...groupOf(v.vm),
    });
    return this.#reprotected(ctx, v, status);
  }

  #reprotected(ctx: StepContext, v: ResolvedPlan['vms'][number], status: ReplicationStatus): StepOutcome {
    const c = status.lastCycle;
    const diskBytes = v.vm.disks.reduce((n, d) => n + d.sizeBytes, 0);
    if (c)
      ctx.run.vms[v.vm.name]!.reprotect = {
        mode: c.mode,
        bytesSent: c.bytesSent,
        diskBytes,
        bytesChanged: c.bytesChanged,
      };
    return {
      message: c
        ? `first cycle: ${c.mode}, ${c.bytesSent} bytes sent (${c.bytesChanged} marked changed) for ${diskBytes} bytes of disk`
        : 'replicating',
    };
  }

  async #shutdownLocal(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const local = await this.#localVm(ctx, v.vm.name);
    if (local === null)
      throw new MamoriError('VM_NOT_FOUND', `${v.vm.name} does not run at this site; nothing to fail back`);
    const vm = (await this.#vms.repo.findById(local.id))!;
    let forced = false;
    if (vm.state === 'paused') await this.#vms.resume(vm.name);
    if (!['stopped', 'crashed'].includes(vm.state))
      forced = (await this.#vms.stop(vm.name, { timeoutSec: ctx.plan.spec.shutdownTimeoutSec })).forced;
    const out = ctx.run.vms[v.vm.name]!;
    out.protectedStoppedAt = new Date().toISOString();
    out.forcedOff = forced;
    const point = await this.#replication.finalSync(vm.name);
    return {
      message: `${forced ? 'forced off after the shutdown timeout' : 'guest shut down'}; final sync point ${point.time}`,
    };
  }

  async #promotePeer(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const { generation } = await (
      await this.#peer(ctx, 60_000)
    ).request<{ generation: number }>('POST', `/recovery/vms/${encodeURIComponent(v.vm.id)}/promote`, {});
    // This site's copy is superseded now: it stays off, as a failed-over protected VM would.
    await this.#markSuperseded(ctx.plan.peer, v.vm.id, generation, `failback by run ${ctx.run.id}`);
    return { message: `generation ${generation}; the copy here stays off` };
  }

  async #recoverPeer(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const local = await this.#vms.repo.findById(v.vm.id);
    // The VM as it runs here, on the networks it had at the peer before the failover.
    const definition = { ...(local?.definition ?? { ...v.vm.definition, diskIds: [] }) };
    const { diskIds: _d, configDriveDiskId: _c, ...def } = definition;
    const vm = {
      ...v.vm,
      definition: {
        ...def,
        nics: def.nics.map((n, i) => ({ ...n, network: v.vm.definition.nics[i]?.network ?? 'none' })),
      },
    };
    const r = await (
      await this.#peer(ctx, (v.options.waitHeartbeatSec + 300) * 1000)
    ).request<PeerRecoveredVm>('POST', `/recovery/vms/${encodeURIComponent(v.vm.id)}/recover`, {
      runId: ctx.run.id,
      runStartedAt: ctx.run.startedAt,
      vm,
      powerOn: v.options.powerOn,
      waitHeartbeatSec: v.options.waitHeartbeatSec,
    });
    const out = ctx.run.vms[v.vm.name]!;
    out.recoveredVmId = r.vmId;
    out.point = r.point;
    out.dataLoss = noDataLoss(out.protectedStoppedAt ?? r.point.time);
    out.dataLossNote = 'the point was taken after the VM was shut down here: it holds every write';
    if (r.heartbeatAt) {
      out.heartbeatAt = r.heartbeatAt;
      out.rtoSec = Math.round((Date.parse(r.heartbeatAt) - Date.parse(ctx.run.startedAt)) / 100) / 10;
    }
    await ctx.save();
    return {
      message: `at ${ctx.plan.peer} from point ${r.point.time}${out.rtoSec !== undefined ? `; heartbeat after ${out.rtoSec} s` : ''}`,
    };
  }

  async #replicatePeer(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const status = await (
      await this.#peer(ctx, 3_600_000)
    ).request<ReplicationStatus>('POST', `/protection/vms/${encodeURIComponent(v.vm.id)}/replicate-back`, {
      rpoSeconds: v.vm.rpoSeconds,
      keepPoints: v.vm.keepPoints,
      ...(v.vm.continuous ? { continuous: v.vm.continuous } : {}),
      ...groupOf(v.vm),
    });
    return this.#reprotected(ctx, v, status);
  }

  async #shutdown(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const out = ctx.run.vms[step.vm!]!;
    try {
      const peer = await this.#peers.client(ctx.plan.peer, {
        timeoutMs: (ctx.plan.spec.shutdownTimeoutSec + 600) * 1000,
      });
      // A disaster must not wait out the long shutdown-and-sync deadline on a site that is gone.
      if (ctx.run.mode === 'disaster') await peer.health(PEER_PROBE_MS);
      const r = await peer.request<PreparedFailover>(
        'POST',
        `/protection/vms/${encodeURIComponent(step.vm!)}/prepare-failover`,
        { shutdownTimeoutSec: ctx.plan.spec.shutdownTimeoutSec },
      );
      out.protectedStoppedAt = r.stoppedAt;
      out.forcedOff = r.forced;
      return {
        message: `${r.wasRunning ? (r.forced ? 'forced off after the shutdown timeout' : 'guest shut down') : 'was already off'}; final sync point ${r.point?.time ?? 'none'}`,
      };
    } catch (e) {
      // A disaster recovery goes on without the protected site: it recovers from the last point.
      if (ctx.run.mode === 'disaster' && peerIsGone(e)) {
        return {
          skipped: true,
          message: `warning: ${ctx.plan.peer} did not answer (${(e as MamoriError).code}); recovering from the newest point held here`,
        };
      }
      throw e;
    }
  }

  async #promote(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const replicaId = await this.#recovery.replicaOf(ctx.plan.peer, v.vm);
    const { generation } = await this.#replicas.promote(replicaId);
    // Tell the protected site now if it answers; otherwise it learns when it comes back
    // (its next cycle is refused with REPLICA_PROMOTED).
    try {
      const peer = await this.#peers.client(ctx.plan.peer, {
        timeoutMs: ctx.run.mode === 'disaster' ? PEER_PROBE_MS : 10_000,
      });
      await peer.request('POST', `/protection/vms/${encodeURIComponent(v.vm.id)}/superseded`, {
        generation,
        reason: `${ctx.run.mode} recovery by run ${ctx.run.id}`,
      });
      return { message: `generation ${generation}; ${ctx.plan.peer} keeps its copy off` };
    } catch (e) {
      if (ctx.run.mode !== 'disaster') throw e;
      return { message: `generation ${generation}; ${ctx.plan.peer} will learn it when it returns` };
    }
  }

  async #recover(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    if (v.vm.arrayDisks) return this.#recoverFromArray(v, ctx);
    const test = ctx.run.mode === 'test';
    const replicaId = await this.#recovery.replicaOf(ctx.plan.peer, v.vm);
    const pointId =
      ctx.run.options.pointTime === undefined ? null : await this.#pointAt(replicaId, ctx.run.options.pointTime);
    const ip = test ? v.options.testIp : v.options.recoveryIp;
    const r = await this.#recovery.recover(ctx.plan.peer, {
      runId: ctx.run.id,
      mode: ctx.run.mode as 'test' | 'planned' | 'disaster',
      vm: v.vm,
      pointId,
      networks: test ? v.testNetworks : v.networks,
      pool: v.pool,
      ip,
    });
    const out = ctx.run.vms[v.vm.name]!;
    out.recoveredVmId = r.vmId;
    out.point = r.point;
    this.#setDataLoss(ctx, v.vm, out, r.point.time, 0);
    await ctx.save();
    return { message: `from point ${r.point.time}${r.created ? '' : ' (made before the restart)'}` };
  }

  /** A VM of an array-based group: registered from the devices' copies this run made. */
  async #recoverFromArray(v: ResolvedPlan['vms'][number], ctx: StepContext): Promise<StepOutcome> {
    const r = await this.#arrays.recoverVm(v, ctx);
    const out = ctx.run.vms[v.vm.name]!;
    out.recoveredVmId = r.vmId;
    out.point = r.point;
    if (out.protectedStoppedAt !== undefined && out.pointsTakenOff?.includes(r.point.id)) {
      // The point the prepare step made with the group's VMs off: nothing is missing, whatever its time says.
      out.dataLoss = noDataLoss(out.protectedStoppedAt);
      out.dataLossNote = dataLossBasis(out.dataLoss);
    } else if (Date.parse(r.point.time) <= 0) {
      // The array cannot say when it took the point: nothing to measure the window from.
      delete out.dataLoss;
      out.dataLossNote = 'unknown: the array did not say when it took the point';
    } else {
      this.#setDataLoss(ctx, v.vm, out, r.point.time, ARRAY_POINT_PRECISION_SEC);
    }
    await ctx.save();
    return { message: `from array point ${r.point.id}${r.created ? '' : ' (made before the restart)'}` };
  }

  /**
   * The writes the point may miss, as bounds: from the point to the protected VM's last
   * heartbeat this site saw (at least) and to when the protected site was known gone (at most).
   * A VM shut down before the point (a planned run) loses nothing.
   */
  #setDataLoss(
    ctx: StepContext,
    vm: ResolvedPlan['vms'][number]['vm'],
    out: PlanRun['vms'][string],
    pointTime: string,
    pointPrecisionSec: number,
  ): void {
    const d = dataLossBounds({
      pointTime,
      pointPrecisionSec,
      protectedStoppedAt: out.protectedStoppedAt ?? null,
      lastHeartbeatAt: vm.lastHeartbeatAt,
      // Only a disaster run says the protected site is gone; a test run recovers beside a running VM.
      peer: this.#peerContact(ctx.plan.peer),
      runStartedAt: ctx.run.mode === 'disaster' ? ctx.run.startedAt : null,
    });
    out.dataLoss = d;
    out.dataLossNote = dataLossBasis(d);
  }

  /** A replica point, or a continuous replica's checkpoint when newer: the last at or before `time`. */
  async #pointAt(replicaId: string, time: string): Promise<string> {
    return this.#replicas.pointIdAt(replicaId, Date.parse(time));
  }

  async #powerOn(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const v = vmOf(ctx.plan, step.vm!);
    const out = ctx.run.vms[v.vm.name]!;
    if (!v.options.powerOn) return { message: 'left powered off, as the plan says' };
    if (!out.recoveredVmId)
      throw new MamoriError('VM_NOT_FOUND', `${v.vm.name} was not recovered, so it cannot be powered on`);
    const started = Date.now();
    const hbAt = await powerOnAndWait(
      this.#vms,
      out.recoveredVmId,
      v.options.waitHeartbeatSec,
      Date.parse(ctx.run.startedAt),
    );
    if (v.options.waitHeartbeatSec === 0) return { message: 'started; not waiting for a heartbeat' };
    if (hbAt === null)
      throw new MamoriError(
        'PROCESS_TIMEOUT',
        `${v.vm.name} gave no heartbeat within ${v.options.waitHeartbeatSec} s of power-on (serial line or guest agent)`,
      );
    out.heartbeatAt = hbAt;
    out.rtoSec = Math.round((Date.parse(hbAt) - Date.parse(ctx.run.startedAt)) / 100) / 10;
    await ctx.save();
    const ip = ctx.run.mode === 'test' ? v.options.testIp : v.options.recoveryIp;
    if (!ip) return { message: `heartbeat after ${out.rtoSec} s` };
    const vm = await this.#vms.repo.findById(out.recoveredVmId);
    const took = await waitGuestIp(this.#vms, vm!.name, ip.address, started + v.options.waitHeartbeatSec * 1000);
    if (took === null)
      return { message: `warning: heartbeat after ${out.rtoSec} s, but the guest did not report taking ${ip.address}` };
    out.ip = took;
    await ctx.save();
    return { message: `heartbeat after ${out.rtoSec} s; the guest took ${took}` };
  }

  async #command(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const s = ctx.plan.spec.steps[step.planStep!]!;
    if (s.action.kind !== 'command') throw new Error('step is not a command');
    const env = {
      ...process.env,
      MAMORI_RUN: ctx.run.id,
      MAMORI_PLAN: ctx.run.plan,
      MAMORI_MODE: ctx.run.mode,
      ...(step.vm ? { MAMORI_VM: step.vm } : {}),
    };
    try {
      const r = await runProcess(s.action.argv[0]!, s.action.argv.slice(1), {
        timeoutMs: s.action.timeoutSec * 1000,
        env,
      });
      const tail = r.stdout.trim().split('\n').at(-1) ?? '';
      return { message: tail ? `exit 0: ${tail.slice(0, 200)}` : 'exit 0' };
    } catch (e) {
      this.#log.warn({ run: ctx.run.id, step: step.id, err: e }, 'plan command failed');
      throw e;
    }
  }
}

function vmOf(plan: ResolvedPlan, name: string): ResolvedPlan['vms'][number] {
  const v = plan.vms.find((x) => x.vm.name === name);
  if (!v) throw new MamoriError('VM_NOT_FOUND', `the plan has no VM ${name}`);
  return v;
}

/** The protection group a reprotected VM joins at its new site: the one it was in, if any. */
function groupOf(vm: { group: string | null }): { group?: string } {
  return vm.group !== null ? { group: vm.group } : {};
}

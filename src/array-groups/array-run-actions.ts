import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import type { Logger } from '../core/logger.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { newShortId, newUuid } from '../core/ids.js';
import type { StorageArrays } from '../adapters/storage-arrays.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { RecoveredVmRepo } from '../store/repos/recovered-vm-repo.js';
import type { VmDefinition } from '../vms/vm-definition.js';
import type { VmService } from '../vms/vm-service.js';
import type { ProtectionGroups } from '../plans/protection-groups.js';
import type { ResolvedArrayGroup, ResolvedPlan } from '../plans/plan-service.js';
import type { PlannedStep } from '../plans/run-steps.js';
import type { RunArrayState } from '../plans/run-journal.js';
import type { StepContext, StepOutcome } from '../plans/run-step-actions.js';
import { recoveryConfigDrive, type RecoveredVm } from '../plans/vm-recovery.js';
import { PEER_PROBE_MS, peerIsGone } from '../plans/peer-gone.js';

/**
 * The run steps of array-based groups, at the recovery site. The array does the copying;
 * these steps drive its adapter here, and the protected site's adapter through its API:
 *  - array-test-start: the adapter's test copies of the replica devices (replication goes on);
 *  - array-test-stop: the test copies removed, once no test VM uses them;
 *  - array-prepare-failover: at the protected site, devices read-only and a last point sent;
 *  - array-failover: the replica devices promoted here; the protected VMs are superseded;
 *  - array-prepare-reverse / array-reverse: the old sources turned into targets at the newest
 *    common point, then replication the other way (only what changed) and the group
 *    protected here.
 * Every step is idempotent (the adapter's commands are), which is its recovery rule.
 * The VMs are recovered from the files on the copied devices, as SRM registers them from
 * a failed-over datastore.
 */
export class ArrayRunActions {
  #recovered: RecoveredVmRepo;
  #arrays: StorageArrays;
  #peers: SitePeers;
  #vms: VmService;
  #groups: ProtectionGroups;
  #poolDir: (pool: string) => string;
  #syncLock: <T>(group: string, fn: () => Promise<T>) => Promise<T>;
  #log: Logger;

  constructor(deps: {
    db: StoreHandle;
    arrays: StorageArrays;
    peers: SitePeers;
    vms: VmService;
    groups: ProtectionGroups;
    poolDir: (pool: string) => string;
    /** Runs fn with no sync of the group here in flight (ArrayGroupSync.exclusive). */
    syncLock: <T>(group: string, fn: () => Promise<T>) => Promise<T>;
    log: Logger;
  }) {
    this.#recovered = new RecoveredVmRepo(deps.db);
    this.#arrays = deps.arrays;
    this.#peers = deps.peers;
    this.#vms = deps.vms;
    this.#groups = deps.groups;
    this.#poolDir = deps.poolDir;
    this.#syncLock = deps.syncLock;
    this.#log = deps.log;
  }

  async run(step: PlannedStep, ctx: StepContext): Promise<StepOutcome> {
    const g = groupOf(ctx.plan, step.group!);
    switch (step.kind) {
      case 'array-test-start':
        return this.#testStart(g, ctx);
      case 'array-test-stop':
        return this.#testStop(g, ctx);
      case 'array-prepare-failover':
        return this.#prepareFailover(g, ctx);
      case 'array-failover':
        return this.#failover(g, ctx);
      case 'array-prepare-reverse': {
        const r = await (
          await this.#peers.client(ctx.plan.peer, { timeoutMs: 3_600_000 })
        ).request<{ devices: { id: string; commonPoint: string }[]; forgotten: string[] }>(
          'POST',
          `/protection/array-groups/${encodeURIComponent(g.name)}/prepare-reverse`,
          {},
        );
        return {
          message:
            r.devices.length === 0
              ? 'already done'
              : `at common point ${r.devices.map((d) => `${d.id}@${d.commonPoint}`).join(', ')}; ${ctx.plan.peer} unregistered ${r.forgotten.join(', ') || 'no VMs'}`,
        };
      }
      case 'array-reverse':
        return this.#reverse(g, ctx);
      default:
        throw new Error(`not an array step: ${step.kind}`);
    }
  }

  async #testStart(g: ResolvedArrayGroup, ctx: StepContext): Promise<StepOutcome> {
    const client = await this.#arrays.client(g.storage);
    const r = await client.call('testFailoverStart', { arrayId: g.arrayId, deviceIds: g.deviceIds });
    const paths: Record<string, string> = {};
    for (const d of r.devices) {
      if (d.testDevice.path === null)
        throw new MamoriError(
          'ADAPTER_FAILED',
          `the test copy ${d.testDevice.id} of ${d.id} is not mounted on this host, so its VMs cannot be registered from it`,
          { details: { device: d.id } },
        );
      paths[d.id] = d.testDevice.path;
    }
    const point = r.devices[0]!.point;
    ctx.run.arrays[g.name] = { point, pointAt: await this.#pointTime(g, point), paths };
    await ctx.save();
    return { message: `test copies at point ${point}: ${Object.values(paths).join(', ')}` };
  }

  async #testStop(g: ResolvedArrayGroup, ctx: StepContext): Promise<StepOutcome> {
    // A test VM still registered (its cleanup failed) would lose its disks under it.
    const left = await this.#recovered.testVms(arrayReplicaId(g));
    if (left.length > 0)
      throw new MamoriError(
        'VM_RUNNING',
        `test VMs ${left.map((l) => l.name).join(', ')} still use the test copies of group ${g.name}; remove them first (run cleanup again)`,
        { details: { vms: left.map((l) => l.name) } },
      );
    const client = await this.#arrays.client(g.storage);
    const r = await client.call('testFailoverStop', { arrayId: g.arrayId, deviceIds: g.deviceIds });
    const removed = r.devices.filter((d) => d.removed).map((d) => d.id);
    return { message: removed.length > 0 ? `removed the test copies of ${removed.join(', ')}` : 'no test copies' };
  }

  async #prepareFailover(g: ResolvedArrayGroup, ctx: StepContext): Promise<StepOutcome> {
    try {
      const peer = await this.#peers.client(ctx.plan.peer, { timeoutMs: 6 * 3_600_000 });
      if (ctx.run.mode === 'disaster') await peer.health(PEER_PROBE_MS);
      const r = await peer.request<{ devices: { id: string; point: string }[] }>(
        'POST',
        `/protection/array-groups/${encodeURIComponent(g.name)}/prepare-failover`,
        {},
      );
      // The protected site refuses this while a VM of the group runs: these points hold every write.
      for (const v of ctx.plan.vms.filter((x) => x.vm.group === g.name))
        ctx.run.vms[v.vm.name]!.pointsTakenOff = r.devices.map((d) => d.point);
      await ctx.save();
      return { message: `last point ${r.devices.map((d) => `${d.id}@${d.point}`).join(', ')}` };
    } catch (e) {
      if (ctx.run.mode === 'disaster' && peerIsGone(e)) {
        return {
          skipped: true,
          message: `warning: ${ctx.plan.peer} did not answer (${(e as MamoriError).code}); failing over to the newest point the array holds here`,
        };
      }
      throw e;
    }
  }

  async #failover(g: ResolvedArrayGroup, ctx: StepContext): Promise<StepOutcome> {
    const client = await this.#arrays.client(g.storage);
    const r = await client.call('failover', { arrayId: g.arrayId, deviceIds: g.deviceIds });
    const paths: Record<string, string> = {};
    for (const d of r.devices) {
      if (d.path === null)
        throw new MamoriError('ADAPTER_FAILED', `device ${d.id} was failed over but is not mounted on this host`, {
          details: { device: d.id },
        });
      paths[d.id] = d.path;
    }
    const point = r.devices[0]!.point;
    ctx.run.arrays[g.name] = { point, pointAt: await this.#pointTime(g, point), paths };
    await ctx.save();
    // The protected copies stay off from now on (split-brain safety), as a host-based promote does.
    const generation = Math.floor(Date.now() / 1000);
    const members = ctx.plan.vms.filter((v) => v.vm.group === g.name);
    try {
      const peer = await this.#peers.client(ctx.plan.peer, {
        timeoutMs: ctx.run.mode === 'disaster' ? PEER_PROBE_MS : 10_000,
      });
      for (const v of members) {
        await peer.request('POST', `/protection/vms/${encodeURIComponent(v.vm.id)}/superseded`, {
          generation,
          reason: `${ctx.run.mode} recovery of array-based group ${g.name} by run ${ctx.run.id}`,
        });
      }
    } catch (e) {
      if (ctx.run.mode !== 'disaster') throw e;
      return {
        message: `at point ${point}; ${ctx.plan.peer} did not answer: it keeps its copies of ${members.map((v) => v.vm.name).join(', ')} until told`,
      };
    }
    return { message: `at point ${point}; ${ctx.plan.peer} keeps its copies off` };
  }

  async #reverse(g: ResolvedArrayGroup, ctx: StepContext): Promise<StepOutcome> {
    const verdict = await this.#arrays.compatOf(g.storage, g.arrayId);
    if (!verdict.supported && !g.forced) {
      throw new MamoriError(
        'COMPAT_UNSUPPORTED',
        `array ${g.arrayId} at this site is not supported (${verdict.reason}), so group ${g.name} cannot be protected from here; record the adapter's conformance run in the compatibility guide first`,
        { details: { arrayId: g.arrayId } },
      );
    }
    const client = await this.#arrays.client(g.storage);
    // The first sync the other way. On a first run the group does not exist here yet, so no
    // scheduled sync can overlap it; on a resume after a cut past the group's creation it
    // does, and the restart scheduled its first sync at once: under the group's sync lock, or
    // the two syncs snapshot and send into the same devices at the same time.
    const { rev, sync } = await this.#syncLock(g.name, async () => ({
      rev: await client.call('reverseReplication', { arrayId: g.arrayId, deviceIds: g.deviceIds }),
      sync: await client.call('syncOnce', { arrayId: g.arrayId, deviceIds: g.deviceIds }),
    }));
    const bytesSent = Object.fromEntries(sync.devices.map((d) => [d.id, d.bytesSent]));
    const state: RunArrayState = ctx.run.arrays[g.name] ?? { point: sync.devices[0]!.point, pointAt: null, paths: {} };
    ctx.run.arrays[g.name] = { ...state, bytesSent };
    const total = sync.devices.reduce((n, d) => n + d.bytesSent, 0);
    for (const v of ctx.plan.vms.filter((x) => x.vm.group === g.name)) {
      const out = ctx.run.vms[v.vm.name];
      if (out)
        out.reprotect = {
          mode: 'array-incremental',
          bytesSent: total,
          diskBytes: v.vm.disks.reduce((n, d) => n + d.sizeBytes, 0),
        };
    }
    await ctx.save();
    const existing = await this.#groups
      .get(g.name)
      .catch((e: unknown) => (isMamoriError(e) && e.code === 'GROUP_NOT_FOUND' ? null : Promise.reject(e)));
    if (existing === null) {
      await this.#groups.createArray(g.name, {
        storage: g.storage,
        arrayId: g.arrayId,
        deviceIds: g.deviceIds,
        peer: ctx.plan.peer,
        force: g.forced,
        rpo: g.rpoSeconds === null ? null : `${g.rpoSeconds}s`,
      });
    } else if (existing.kind !== 'array' || existing.array?.arrayId !== g.arrayId) {
      throw new MamoriError(
        'GROUP_EXISTS',
        `this site has a protection group ${g.name} of its own; rename it, then run reprotect again`,
        { details: { group: g.name } },
      );
    }
    this.#log.info({ run: ctx.run.id, group: g.name, bytesSent }, 'array-based group reprotected');
    return {
      message: `from common point ${rev.devices.map((d) => d.commonPoint).join(', ')}: sent ${total} bytes; group ${g.name} is protected here, recovering at ${ctx.plan.peer}`,
    };
  }

  /** When the array took `point`, from the replica's sync status (null when it cannot say). */
  async #pointTime(g: ResolvedArrayGroup, point: string): Promise<string | null> {
    const client = await this.#arrays.client(g.storage);
    const s = await client.call('querySyncStatus', { arrayId: g.arrayId, deviceIds: g.deviceIds }).catch(() => null);
    const d = s?.devices.find((x) => x.lastPoint === point);
    return d?.lastPointAt ?? null;
  }

  /**
   * Registers a protected VM of an array-based group from the device copies this run made
   * (test copies or failed-over devices), in one transaction; idempotent per run and VM. A
   * test VM gets its own identity; a failover keeps the VM's (UUID, MACs). The VM owns its
   * disks here, as the VM it replaces did.
   */
  async recoverVm(v: ResolvedPlan['vms'][number], ctx: StepContext): Promise<RecoveredVm> {
    const g = groupOf(ctx.plan, v.vm.group ?? '');
    const state = ctx.run.arrays[g.name];
    if (!state)
      throw new MamoriError(
        'NOT_FOUND',
        `group ${g.name}'s devices were not ${ctx.run.mode === 'test' ? 'copied for the test' : 'failed over'} by this run`,
        { details: { group: g.name } },
      );
    const pointAt = state.pointAt ?? new Date(0).toISOString();
    const done = await this.#recovered.madeByRun(ctx.run.id, v.vm.id);
    if (done) return { vmId: done.vmId, name: done.name, point: { id: done.pointId, time: pointAt }, created: false };
    if (await this.#vms.repo.findByName(v.vm.name)) {
      throw new MamoriError(
        'VM_EXISTS',
        `a VM named ${v.vm.name} already exists at this site; delete or rename it (or clean up an earlier test) before recovering`,
        { details: { vm: v.vm.name } },
      );
    }
    const test = ctx.run.mode === 'test';
    const vmId = test ? newUuid() : v.vm.id;
    const now = new Date().toISOString();
    const disks: DiskRecord[] = [];
    for (const d of v.vm.arrayDisks ?? []) {
      const root = state.paths[d.peer.deviceId];
      if (root === undefined)
        throw new MamoriError('NOT_FOUND', `device ${d.peer.deviceId} of array ${g.arrayId} was not part of this run`, {
          details: { device: d.peer.deviceId },
        });
      const path = d.kind === 'rdm' ? root : join(root, d.relativePath);
      const st = await stat(path).catch(() => null);
      if (st === null)
        throw new MamoriError(
          'DISK_NOT_FOUND',
          `${v.vm.name}'s disk ${d.relativePath || d.peer.deviceId} is not on ${path}: the device copy does not hold it (was it on the device at the last point?)`,
          { details: { path } },
        );
      disks.push({
        id: newShortId('disk'),
        name: `${v.vm.name}-${test ? 'test-' : ''}disk${d.index}`,
        pool: v.pool,
        kind: d.kind,
        format: d.format,
        path,
        sizeBytes: d.sizeBytes,
        rdmMode: d.kind === 'rdm' ? 'virtual' : null,
        shared: false,
        vmId,
        ownedByVm: d.kind === 'image',
        createdAt: now,
        overlays: [],
      });
    }
    const nics = v.vm.definition.nics.map((n, i) => ({
      ...n,
      network: (test ? v.testNetworks : v.networks)[i] ?? 'none',
    }));
    const ip = test ? v.options.testIp : v.options.recoveryIp;
    const made: string[] = [];
    try {
      if (ip)
        disks.push(
          await recoveryConfigDrive({
            dir: join(this.#poolDir(v.pool), 'recovered', ctx.run.id),
            vmName: v.vm.name,
            vmId,
            runId: ctx.run.id,
            test,
            nics,
            ip,
            pool: v.pool,
            made,
          }),
        );
      const def: VmDefinition = {
        ...v.vm.definition,
        id: vmId,
        name: v.vm.name,
        nics,
        diskIds: disks.map((d) => d.id),
        ...(ip ? { configDriveDiskId: disks.at(-1)!.id } : {}),
      };
      // One transaction: the VM, its disks and the record of the run (no hold: the point is the array's).
      await this.#recovered.create({
        def,
        disks,
        now,
        hold: false,
        record: {
          runId: ctx.run.id,
          mode: ctx.run.mode,
          replicaId: arrayReplicaId(g),
          pointId: state.point,
          sourceVmId: v.vm.id,
        },
      });
    } catch (e) {
      for (const f of made) await rm(f, { force: true });
      throw e;
    }
    return { vmId, name: v.vm.name, point: { id: state.point, time: pointAt }, created: true };
  }
}

/** recovered_vms.replica_id of a VM recovered from an array group's devices. */
function arrayReplicaId(g: ResolvedArrayGroup): string {
  return `array:${g.storage}/${g.arrayId}/${g.name}`;
}

function groupOf(plan: ResolvedPlan, name: string): ResolvedArrayGroup {
  const g = (plan.arrayGroups ?? []).find((x) => x.name === name);
  if (!g)
    throw new MamoriError('GROUP_NOT_FOUND', `the plan recovers no array-based group ${name}`, {
      details: { group: name },
    });
  return g;
}

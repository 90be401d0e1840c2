import type { StoreHandle } from '../store/store-handle.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { ReplicationService } from '../replication/replication-service.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { PeerRef } from '../adapters/adapter-protocol.js';
import type { ArrayGroups } from '../array-groups/array-groups.js';

import type { ProtectedInventory, ProtectedVm } from '../store/records/plan-record.js';
// The inventory's record types live in store/ (issue 20: plans.inventory has one codec there); re-exported here.
export type { ProtectedVm, ProtectedArrayGroup, ProtectedInventory } from '../store/records/plan-record.js';

export interface PreparedFailover {
  vm: string;
  /** The guest did not shut down within the timeout and was powered off. */
  forced: boolean;
  wasRunning: boolean;
  /** The final point, taken with the VM off: it holds every write the guest made. */
  point: { id: string; time: string } | null;
  stoppedAt: string;
}

/**
 * The protected side of recovery plans, called by the recovery site with its site token:
 * what is protected for it (groups, VM definitions, replicas), the shutdown plus final
 * sync of a planned migration, and learning that a VM was superseded by a failover.
 */
export class ProtectedSite {
  #replications: ReplicationRepo;
  #siteName: string;
  #vms: VmService;
  #replication: ReplicationService;
  #log: Logger;
  #arrays: ArrayGroups;

  constructor(deps: {
    db: StoreHandle;
    siteName: string;
    vms: VmService;
    replication: ReplicationService;
    log: Logger;
    arrays: ArrayGroups;
  }) {
    this.#replications = new ReplicationRepo(deps.db);
    this.#arrays = deps.arrays;
    this.#siteName = deps.siteName;
    this.#vms = deps.vms;
    this.#replication = deps.replication;
    this.#log = deps.log;
  }

  /** VMs replicated to `peer` (with their groups), with everything needed to recover them there. */
  async inventory(peer: string): Promise<ProtectedInventory> {
    const rows = await this.#replications.toPeerWithGroups(peer);
    const groups = new Map<string, string[]>();
    const vms: ProtectedVm[] = [];
    for (const r of rows) {
      const vm = await this.#vms.repo.findById(r.vmId);
      if (!vm) continue;
      const view = await this.#vms.view(vm);
      const { diskIds: _ids, configDriveDiskId: _cd, ...definition } = vm.definition;
      const replicated = replicatedDiskIds(vm.definition).length;
      vms.push({
        id: vm.id,
        name: vm.name,
        state: vm.state,
        group: r.group,
        replicaId: r.replicaId,
        rpoSeconds: Math.round(r.rpoMs / 1000),
        keepPoints: r.keepPoints,
        continuous: r.continuous,
        definition,
        disks: view.disks.slice(0, replicated).map((d, index) => ({ index, sizeBytes: d.sizeBytes, pool: 'default' })),
        lastHeartbeatAt: view.lastHeartbeatAt,
      });
      if (r.group !== null) groups.set(r.group, [...(groups.get(r.group) ?? []), vm.name]);
    }
    const arrayGroups: ProtectedInventory['groups'] = [];
    for (const g of await this.#arrays.bindings()) {
      if (g.binding.peer !== peer) continue;
      const m = await this.#arrays.membership(g.binding);
      const peers: PeerRef[] = m.devices.map((d) => d.peer).filter((p): p is PeerRef => p !== null);
      for (const { vm, disks } of m.members) {
        const view = await this.#vms.view(vm);
        const { diskIds: _ids, configDriveDiskId: _cd, ...definition } = vm.definition;
        vms.push({
          id: vm.id,
          name: vm.name,
          state: vm.state,
          group: g.name,
          replicaId: null,
          rpoSeconds: 0,
          keepPoints: 0,
          definition,
          disks: disks.map((d) => ({ index: d.index, sizeBytes: d.sizeBytes, pool: 'default' })),
          lastHeartbeatAt: view.lastHeartbeatAt,
          arrayDisks: disks,
        });
      }
      arrayGroups.push({
        name: g.name,
        vms: m.members.map((x) => x.vm.name).sort(),
        array: {
          peerArrayId: peers[0]?.arrayId ?? '',
          peerDeviceIds: peers.map((p) => p.deviceId),
          arrayId: g.binding.arrayId,
          deviceIds: g.binding.deviceIds,
          forced: g.binding.forced,
          rpoSeconds: g.binding.rpoSeconds ?? null,
        },
      });
    }
    return {
      site: this.#siteName,
      takenAt: new Date().toISOString(),
      groups: [...[...groups].map(([name, v]) => ({ name, vms: v })), ...arrayGroups],
      vms,
    };
  }

  /**
   * Planned migration, per VM: guest shutdown (forced off after the timeout), then a final
   * replication cycle of the stopped VM. Idempotent: a VM already off just gets the sync,
   * so a resumed run may call it again.
   */
  async prepareFailover(peer: string, vmName: string, shutdownTimeoutSec: number): Promise<PreparedFailover> {
    const { vm, arrayGroup } = await this.#protectedFor(peer, vmName);
    let forced = false;
    const wasRunning = ['running', 'paused', 'starting', 'stopping'].includes(vm.state);
    if (vm.state === 'paused') await this.#vms.resume(vmName).catch(() => undefined);
    if (wasRunning) forced = (await this.#vms.stop(vmName, { timeoutSec: shutdownTimeoutSec })).forced;
    const stoppedAt = new Date().toISOString();
    // Array-based: the array's last point is the group's own step, once all its VMs are off.
    if (arrayGroup !== null) return { vm: vmName, forced, wasRunning, point: null, stoppedAt };
    // No more cycles after this one: the next writes to this VM's disks are the recovery site's.
    const { id, time } = await this.#replication.finalSync(vmName);
    const point = { id, time };
    this.#log.info(
      { vm: vmName, forced, point: point.id },
      'protected VM shut down and synced for a planned migration',
    );
    return { vm: vmName, forced, wasRunning, point, stoppedAt };
  }

  /**
   * The recovery site promoted this VM's replica: the VM here is superseded and stays off.
   * A VM still running here (the link was cut, the site kept going) is paused, not killed:
   * its writes since the point are not lost until someone decides, and none can diverge further.
   */
  async markSuperseded(bySite: string, vmId: string, generation: number, reason: string): Promise<void> {
    const vm = await this.#vms.repo.findById(vmId);
    if (!vm) return;
    const peer = await this.#replications.peerOf(vmId);
    if (peer !== bySite && (await this.#arrays.groupOfVm(bySite, vmId)) === null)
      throw new MamoriError('NOT_FOUND', `VM ${vm.name} does not replicate to ${bySite}`);
    if (!(await this.#vms.repo.markSuperseded({ vmId, generation, bySite, reason, at: new Date().toISOString() })))
      return;
    if (peer !== undefined) await this.#replication.setPaused(vm.name, true).catch(() => undefined);
    if (vm.state === 'running') {
      this.#log.warn({ vm: vm.name, generation, bySite }, 'VM superseded by a failover while running here: pausing it');
      await this.#vms
        .pause(vm.name)
        .catch((e: unknown) => this.#log.error({ vm: vm.name, err: e }, 'could not pause a superseded VM'));
    } else {
      this.#log.warn({ vm: vm.name, generation, bySite }, 'VM superseded by a failover: it stays off');
    }
  }

  async #protectedFor(
    peer: string,
    vmName: string,
  ): Promise<{ vm: { id: string; state: string }; arrayGroup: string | null }> {
    const vm = await this.#vms.get(vmName);
    if ((await this.#replications.peerOf(vm.id)) === peer) return { vm, arrayGroup: null };
    const arrayGroup = await this.#arrays.groupOfVm(peer, vm.id);
    if (arrayGroup === null)
      throw new MamoriError('VM_NOT_FOUND', `VM ${vmName} is not protected for site ${peer}`, {
        details: { vm: vmName },
      });
    return { vm, arrayGroup };
  }
}

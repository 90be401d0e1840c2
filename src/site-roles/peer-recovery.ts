import type { ContinuousSettings } from '../store/records/replica-record.js';
import type { StoreHandle } from '../store/store-handle.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import type { ReplicaService, ReplicaView } from '../replication/replica-service.js';
import type { ReplicationService, ReplicationStatus } from '../replication/replication-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { ProtectionGroups } from '../plans/protection-groups.js';
import type { ProtectedVm } from './protected-site.js';
import type { ReplicaSeeding } from './replica-seeding.js';
import type { VmRecovery } from '../plans/vm-recovery.js';
import { powerOnAndWait } from '../plans/vm-heartbeat.js';
import { MamoriError } from '../core/mamori-error.js';

export interface PeerRecoveredVm {
  vmId: string;
  point: { id: string; time: string };
  heartbeatAt: string | null;
}

/**
 * What a paired site asks of this one when the roles turn (reprotect and failback run at the
 * site holding the plan): seed a reverse replica from a superseded VM, replicate a VM back to
 * the caller starting from such seeds, and (failback) promote this site's replica of a VM
 * and bring the VM up here. Each is idempotent, so the caller's run can resume and repeat it.
 */
export class PeerRecovery {
  #replications: ReplicationRepo;
  #groupRepo: ProtectionGroupRepo;
  #replicaRepo: ReplicaRepo;
  #replicas: ReplicaService;
  #replication: ReplicationService;
  #vms: VmService;
  #groups: ProtectionGroups;
  #seeding: ReplicaSeeding;
  #recovery: VmRecovery;

  constructor(deps: {
    db: StoreHandle;
    replicas: ReplicaService;
    replication: ReplicationService;
    vms: VmService;
    groups: ProtectionGroups;
    seeding: ReplicaSeeding;
    recovery: VmRecovery;
  }) {
    this.#replications = new ReplicationRepo(deps.db);
    this.#groupRepo = new ProtectionGroupRepo(deps.db);
    this.#replicaRepo = new ReplicaRepo(deps.db);
    this.#replicas = deps.replicas;
    this.#replication = deps.replication;
    this.#vms = deps.vms;
    this.#groups = deps.groups;
    this.#seeding = deps.seeding;
    this.#recovery = deps.recovery;
  }

  seed(peer: string, vmId: string): Promise<ReplicaView> {
    return this.#seeding.seed(peer, vmId);
  }

  /**
   * Replicates a VM of this site to the peer, whose replica was seeded from the VM's old
   * disks: the first cycle is a checksum resync that sends only the differences. The VM
   * joins protection group `group` here (when it was in one), so the peer's plans find it again.
   */
  async replicateBack(
    peer: string,
    vmId: string,
    input: { rpoSeconds: number; keepPoints: number; continuous?: ContinuousSettings; group?: string },
  ): Promise<ReplicationStatus> {
    const vm = await this.#vms.repo.findById(vmId);
    if (!vm) throw new MamoriError('VM_NOT_FOUND', `no VM ${vmId} here to replicate back`);
    const existing = await this.#replications.peerOf(vmId);
    if (existing !== undefined && existing !== peer)
      throw new MamoriError('VM_INVALID_STATE', `${vm.name} already replicates to ${existing}`);
    if (existing === undefined)
      await this.#replication.enable(vm.name, {
        to: peer,
        rpo: `${input.rpoSeconds}s`,
        points: input.keepPoints,
        seeded: true,
        // Continuous before: continuous again, with the same checkpoints, window and freezes.
        ...(input.continuous
          ? {
              continuous: true,
              checkpoint: `${input.continuous.checkpointMs}ms`,
              journal: `${Math.round(input.continuous.journalMs / 1000)}s`,
              appCheckpoint: input.continuous.appCheckpointMs ? `${input.continuous.appCheckpointMs}ms` : 'off',
            }
          : {}),
      });
    const status = await this.#replication.syncNow(vm.name);
    if (input.group === undefined) return status;
    const group = await this.#groupRepo.find(input.group);
    const member = await this.#groupRepo.groupOfVm(vmId);
    if (!group) await this.#groups.create(input.group, [vm.name]);
    else if (!member) await this.#groups.add(input.group, vm.name);
    return status;
  }

  /** Failback, first half: this site's replica of the VM becomes its disks (the peer keeps its copy off). */
  async promote(peer: string, vmId: string): Promise<{ generation: number }> {
    const r = await this.#replicaRepo.findIdBySource(peer, vmId);
    if (r === undefined)
      throw new MamoriError('NOT_FOUND', `this site holds no replica of VM ${vmId} from ${peer}; reprotect first`);
    return { generation: (await this.#replicas.promote(r)).generation };
  }

  /** Failback, second half: the VM made here from the newest point, on its own networks, powered on and waited for. */
  async recover(
    peer: string,
    input: { runId: string; runStartedAt: string; vm: ProtectedVm; powerOn: boolean; waitHeartbeatSec: number },
  ): Promise<PeerRecoveredVm> {
    const made = await this.#recovery.recover(peer, {
      runId: input.runId,
      mode: 'planned',
      vm: input.vm,
      pointId: null,
      pool: 'default',
      ip: undefined,
      networks: input.vm.definition.nics.map((n) => n.network),
    });
    if (!input.powerOn) return { vmId: made.vmId, point: made.point, heartbeatAt: null };
    // The caller's run start, with a minute's slack for the two clocks: a stale heartbeat is
    // from before the failover, long before that.
    const hb = await powerOnAndWait(
      this.#vms,
      made.vmId,
      input.waitHeartbeatSec,
      Math.min(Date.parse(input.runStartedAt), Date.now()) - 60_000,
    );
    if (hb === null && input.waitHeartbeatSec > 0)
      throw new MamoriError(
        'PROCESS_TIMEOUT',
        `${input.vm.name} gave no heartbeat within ${input.waitHeartbeatSec} s of power-on`,
      );
    return { vmId: made.vmId, point: made.point, heartbeatAt: hb };
  }
}

/* A recovery plan and the protected inventory it was checked against, as the store keeps them (issue 20). */
import type { ContinuousSettings } from './replica-record.js';
import type { VmDefinition } from './vm-definition.js';
import type { ArrayDisk } from './protection-group-record.js';

export interface IpCustomization {
  /** `10.1.0.5/24` */
  address: string;
  gateway?: string;
  dns?: string[];
}

export interface PlanVmOptions {
  /** 1 (first) to 5 (last); default 3. */
  priority: number;
  powerOn: boolean;
  /** Wait this long for the guest's heartbeat after power-on; 0: do not wait. */
  waitHeartbeatSec: number;
  /** VMs of the same (or an earlier) priority that must have recovered first. */
  dependsOn: string[];
  recoveryIp?: IpCustomization;
  testIp?: IpCustomization;
}

export const STEP_MODES = ['test', 'planned', 'disaster'] as const;
export type StepMode = (typeof STEP_MODES)[number];

/** A step the operator adds before or after a priority group or a VM's recovery. */
export interface PlanStep {
  at: 'before' | 'after';
  scope: { kind: 'priority'; priority: number } | { kind: 'vm'; vm: string };
  action: { kind: 'command'; argv: string[]; timeoutSec: number } | { kind: 'prompt'; message: string };
  /** Run modes the step runs in (default: all). */
  modes: StepMode[];
}

export interface PlanSpec {
  name: string;
  description: string;
  /** The paired site whose protection groups this plan recovers here (default: the only peer). */
  protectedSite: string | null;
  protectionGroups: string[];
  /**
   * Protected VMs recovered one by one, by name, in or outside a protection group (what
   * `mamori vm failover VM --planned` makes: Hyper-V's per-VM failover). A plan names at
   * least one group or one VM.
   */
  protectedVms: string[];
  /** Guest shutdown of protected VMs before a planned migration, then forced off. */
  shutdownTimeoutSec: number;
  /** VMs of one priority started at once, at most. */
  concurrency: number;
  /** Per-VM options; VMs of the groups that are not listed get the defaults. */
  vms: Record<string, PlanVmOptions>;
  steps: PlanStep[];
}

/** A protected VM as the recovery site needs it to rebuild the VM from its replica. */
export interface ProtectedVm {
  id: string;
  name: string;
  state: string;
  /** null: replicated to the peer but in no protection group (a plan can still name it). */
  group: string | null;
  /** Host-based: the replica at the peer; null for a VM of an array-based group. */
  replicaId: string | null;
  rpoSeconds: number;
  keepPoints: number;
  /** Continuous replication's settings, or null (cycles); a reprotect replicates back the same way. Absent from older inventories. */
  continuous?: ContinuousSettings | null;
  definition: Omit<VmDefinition, 'diskIds' | 'configDriveDiskId'>;
  disks: { index: number; sizeBytes: number; pool: string }[];
  lastHeartbeatAt: string | null;
  /** Array-based: where each disk is on the group's devices (the recovery site finds it on their peers). */
  arrayDisks?: ArrayDisk[];
}

/** An array-based group as the recovery site needs it: the peer array and devices it fails over. */
export interface ProtectedArrayGroup {
  /** The array at the recovery site holding the devices' peers, and those devices. */
  peerArrayId: string;
  peerDeviceIds: string[];
  /** The protected site's array and devices. */
  arrayId: string;
  deviceIds: string[];
  forced: boolean;
  rpoSeconds: number | null;
}

export interface ProtectedInventory {
  site: string;
  takenAt: string;
  groups: { name: string; vms: string[]; array?: ProtectedArrayGroup }[];
  vms: ProtectedVm[];
}

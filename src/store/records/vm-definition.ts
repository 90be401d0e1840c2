/**
 * What a VM is, independent of whether it runs. Persisted as JSON in vms.definition.
 * machineType is pinned at creation (our "virtual hardware version"): a VM keeps the
 * machine type it was made with across QEMU upgrades, so guests never see new hardware.
 */
export interface VmDefinition {
  id: string;
  name: string;
  vcpus: number;
  memoryMiB: number;
  firmware: Firmware;
  machineType: string;
  /** Disk ids in attachment order: index i becomes node disk<i>. */
  diskIds: string[];
  nics: NicDefinition[];
  boot: BootDefinition;
  /** Seconds to wait for the guest after the ACPI power button before forcing it off. */
  stopTimeoutSec: number;
  /**
   * A virtio-serial channel for qemu-guest-agent (Proxmox's `agent: 1`): replication then
   * freezes the guest's filesystems around each point. Absent in VMs made before it existed.
   */
  guestAgent?: boolean;
  /**
   * How the disks attach: virtio-blk (absent: the default), or SATA on an AHCI controller for
   * guests without virtio drivers (a converted Windows that has no viostor). At most 6 on SATA.
   */
  diskBus?: DiskBus;
  /**
   * The cloud-init NoCloud config drive a recovery attached (IP customization), always the
   * last disk: it belongs to this site's copy of the VM, so replication leaves it out.
   */
  configDriveDiskId?: string;
}

/** The disks replication copies: every disk but a recovery's config drive (which is last, so node indexes hold). */
export function replicatedDiskIds(def: VmDefinition): string[] {
  return def.diskIds.filter((id) => id !== def.configDriveDiskId);
}

export const DISK_BUSES = ['virtio', 'sata'] as const;
export type DiskBus = (typeof DISK_BUSES)[number];
/** Ports of QEMU's ich9-ahci. */
export const SATA_PORTS = 6;

export const FIRMWARES = ['bios', 'uefi'] as const;
export type Firmware = (typeof FIRMWARES)[number];

export const NIC_MODELS = ['virtio-net-pci', 'e1000'] as const;
export type NicModel = (typeof NIC_MODELS)[number];

export interface NicDefinition {
  mac: string;
  model: NicModel;
  /**
   * 'user' is QEMU's restricted user-mode network (no route out); 'none' a NIC without link;
   * any other name is a site network (src/networks): a tap on that network's bridge.
   */
  network: string;
}

export type BootDefinition =
  | { kind: 'disk' }
  /**
   * writelog false: the guest only beats (an idle guest); absent in VMs made before it existed.
   * diskbench: the guest measures each of its disks instead (mamori bench storage), then powers off.
   */
  | {
      kind: 'test-guest';
      writelogRate: number;
      acpi: boolean;
      writelog?: false;
      /** text: compressible records (a syslog-like text, about 2.8x with lz4); absent: random. */
      writelogPayload?: WritelogPayload;
      diskbench?: { mib: number; seconds: number };
    };

/** What the test guest's log records carry: random bytes (incompressible) or text. */
export const WRITELOG_PAYLOADS = ['random', 'text'] as const;
export type WritelogPayload = (typeof WRITELOG_PAYLOADS)[number];

export const VM_LIMITS = {
  vcpus: { min: 1, max: 64 },
  memoryMiB: { min: 32, max: 1024 * 1024 },
  stopTimeoutSec: { min: 1, max: 3600 },
  writelogRate: { min: 0, max: 1000 },
} as const;

/** incoming: a live migration's destination, QEMU waiting for the migration stream. */
export const VM_STATES = ['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed', 'incoming'] as const;
export type VmState = (typeof VM_STATES)[number];

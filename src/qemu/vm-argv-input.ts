/**
 * What buildVmArgv reads, in qemu/'s own terms: the fields of a VM's definition and disks
 * that reach the command line and nothing else, so qemu/ depends on no service's records.
 * vms/ maps its VmDefinition and DiskRecord rows into this (vms/vm-argv-mapping.ts).
 */

export interface VmRuntimePaths {
  qmpSocket: string;
  pidFile: string;
  serialLog: string;
  /** Per-VM copy of the UEFI variable store (uefi only). */
  uefiVars: string;
  /** The guest agent channel's socket (guestAgent only). */
  guestAgentSocket?: string;
}

export interface ArgvNic {
  mac: string;
  /** QEMU's device name: virtio-net-pci or e1000. */
  model: string;
  /** 'user' (restricted user-mode), 'none' (no link), or a site network: a tap (tapName). */
  network: string;
}

export type ArgvBoot =
  | { kind: 'disk' }
  /** The test guest: a direct kernel boot whose command line sets its write log or disk benchmark. */
  | {
      kind: 'test-guest';
      writelogRate: number;
      acpi: boolean;
      writelog?: false;
      writelogPayload?: 'random' | 'text';
      diskbench?: { mib: number; seconds: number };
    };

export interface ArgvMachine {
  /** The VM's UUID (-uuid), also the source of its tap names. */
  id: string;
  name: string;
  vcpus: number;
  memoryMiB: number;
  firmware: 'bios' | 'uefi';
  /** Pinned at the VM's creation: QEMU's -machine type. */
  machineType: string;
  nics: ArgvNic[];
  boot: ArgvBoot;
  guestAgent?: boolean;
  /** virtio-blk when absent. */
  diskBus?: 'virtio' | 'sata';
}

export interface ArgvDisk {
  /** Its first 20 bytes are the guest-visible serial. */
  id: string;
  /** An image file, or a raw device mapping (no format node between guest and device). */
  kind: 'image' | 'rdm';
  /** The format of `path`: qcow2 or raw. */
  format: string;
  path: string;
  rdmMode: 'virtual' | 'physical' | null;
  /** share-rw: a second VM writes the same device (guest clusters). */
  shared: boolean;
  /** qcow2 overlays on `path`, oldest first; the guest writes into the last. */
  overlays: string[];
}

export interface VmArgvInput {
  def: ArgvMachine;
  /** The VM's disks in attachment order (node disk<i>). */
  disks: ArgvDisk[];
  paths: VmRuntimePaths;
  accel: 'kvm' | 'tcg';
  testGuest: { kernel: string; initrd: string } | null;
  ovmfCode: string | null;
}

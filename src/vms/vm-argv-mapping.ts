import type { ArgvDisk, ArgvMachine } from '../qemu/vm-argv-input.js';
import type { DiskRecord } from '../disks/disk-record.js';
import type { VmDefinition } from './vm-definition.js';

/**
 * A VM's records as qemu/'s argv builder takes them: only the fields that reach the command
 * line, so a new field in a record never changes a command line by accident.
 */
export function argvMachine(def: VmDefinition): ArgvMachine {
  return {
    id: def.id,
    name: def.name,
    vcpus: def.vcpus,
    memoryMiB: def.memoryMiB,
    firmware: def.firmware,
    machineType: def.machineType,
    nics: def.nics.map((n) => ({ mac: n.mac, model: n.model, network: n.network })),
    // The boot shapes are the same union in both layers (the compiler checks it).
    boot: def.boot,
    ...(def.guestAgent === undefined ? {} : { guestAgent: def.guestAgent }),
    ...(def.diskBus === undefined ? {} : { diskBus: def.diskBus }),
  };
}

export function argvDisk(d: DiskRecord): ArgvDisk {
  return {
    id: d.id,
    kind: d.kind,
    format: d.format,
    path: d.path,
    rdmMode: d.rdmMode,
    shared: d.shared,
    overlays: d.overlays,
  };
}

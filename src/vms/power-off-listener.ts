/**
 * Told once a VM's QEMU has gone (stopped, powered off by its guest, killed or crashed, or found
 * dead at server start), after its state is written: a desktop pool replaces a desktop's
 * disposable disk then. VmSupervisor receives it at construction; a listener that fails is
 * logged, never fatal.
 */
export interface PowerOffListener {
  vmPoweredOff(vmId: string): Promise<void>;
}

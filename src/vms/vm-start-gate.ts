/**
 * What every VM start passes through, given to VmService at construction. Replication is the
 * gate (ReplicationService.aroundVmStart): a start must not meet a copy of the stopped VM's
 * images in progress (the copy's reader holds them, and QEMU would be refused the write lock),
 * so the start waits for the VM's cycle, cutting an offline copy short.
 */
export interface VmStartGate {
  /** Runs `start` when the VM may start; resolves or rejects as `start` does. */
  aroundVmStart(vmId: string, start: () => Promise<void>): Promise<void>;
}

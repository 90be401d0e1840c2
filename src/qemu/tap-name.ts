/**
 * The tap QEMU makes for NIC i of a VM: unique per VM and NIC, at most 15 bytes (IFNAMSIZ).
 * The argv names it and the supervisor puts it on its bridge: both must agree, and a
 * running VM's taps keep their names across server versions, so this never changes.
 */
export function tapName(vmId: string, nicIndex: number): string {
  return `mmt${vmId.replace(/-/g, '').slice(0, 10)}${nicIndex}`;
}

import type { VmService } from '../vms/vm-service.js';
import type { MigrationContext } from './outgoing-state.js';
import type { ReverseReplication } from './reverse-replication.js';

/**
 * The source's last step once the destination's copy is the VM: the `finish` step of a run and
 * the recovery of a run cut after switchover both call this, so a cut move ends as an uncut
 * one does. Onto the VM's replica: the VM here is quit (never continued) and kept as the seed
 * of the reversed replication, which the destination then runs back here; otherwise the VM here
 * is removed. Safe to run again after any part of it was done (a cut during this step, say):
 * a VM already stopped is not stopped again, one already gone (removed, or turned into the
 * seed, whose rows replace the VM's) is not looked for, and the reversal's parts are each
 * idempotent (superseding a VM gone or superseded is a no-op, a seeded replica is found again,
 * replicating back what already replicates back syncs once more).
 */
export async function finishMigration(
  deps: { vms: VmService; reverse: ReverseReplication },
  vmId: string,
  ctx: MigrationContext,
): Promise<void> {
  const vm = await deps.vms.repo.findById(vmId);
  if (ctx.replication) {
    // Quit, never cont; the disks here become the seed of the reversed replication.
    if (vm && !['stopped', 'crashed'].includes(vm.state)) await deps.vms.stop(vm.name, { force: true });
    const r = ctx.replication;
    await deps.reverse.reverse(ctx.to, vmId, 1, {
      rpoSeconds: r.rpoSeconds,
      keepPoints: r.keepPoints,
      ...(r.continuous ? { continuous: r.continuous } : {}),
      ...(r.group !== null ? { group: r.group } : {}),
    });
  } else if (vm) {
    // Quit, never cont: the copy at the destination is the VM now.
    await deps.vms.delete(vm.name, { force: true });
  }
}

import type { VmDeleteGuard } from '../vms/vm-delete-guard.js';
import type { DesktopPoolRepo } from '../store/repos/desktop-pool-repo.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * A pool's desktops are overlays on its master's snapshot: the master, and that snapshot,
 * cannot be deleted while a pool uses them. VmService asks this guard before it deletes
 * (src/main.ts hands it over at construction).
 */
export function poolMasterGuard(pools: Pick<DesktopPoolRepo, 'list'>): VmDeleteGuard {
  return {
    async beforeVmDelete(vm) {
      const using = (await pools.list()).filter((p) => p.spec.master.vmId === vm.id);
      if (using.length > 0) {
        throw new MamoriError(
          'MASTER_IN_USE',
          `VM ${vm.name} is the master of desktop pool${using.length > 1 ? 's' : ''} ${using.map((p) => p.name).join(', ')}: delete the pool${using.length > 1 ? 's' : ''} first`,
          { details: { pools: using.map((p) => p.name) } },
        );
      }
    },
    async beforeSnapshotDelete(vm, snapshot) {
      const using = (await pools.list()).filter((p) => p.spec.master.vmId === vm.id && p.spec.snapshot === snapshot);
      if (using.length > 0) {
        throw new MamoriError(
          'MASTER_IN_USE',
          `snapshot ${snapshot} of ${vm.name} backs desktop pool ${using.map((p) => p.name).join(', ')}: recompose the pool onto another snapshot, or delete it, first`,
          { details: { pools: using.map((p) => p.name) } },
        );
      }
    },
  };
}

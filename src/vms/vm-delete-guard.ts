import type { VmRow } from '../store/repos/vm-repo.js';

/**
 * A check VmService runs before it deletes a VM or one of its snapshots: it throws to refuse
 * (a desktop pool's master, and the snapshot its desktops are overlays on). VmService receives
 * its guards at construction (src/main.ts says which), so what may refuse a delete is read there.
 */
export interface VmDeleteGuard {
  beforeVmDelete(vm: VmRow): Promise<void>;
  beforeSnapshotDelete(vm: VmRow, snapshot: string): Promise<void>;
}

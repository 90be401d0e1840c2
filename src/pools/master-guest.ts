import { openSource } from '../inspect/image-source.js';
import { inspectDisk } from '../inspect/inspector.js';
import type { GuestOs } from '../store/repos/pool-records.js';

/**
 * The guest OS on the master's snapshot, read from its disks (partition table, filesystem,
 * registry), not asked: it decides how desktops are customized (a shell script for cloud-init,
 * or PowerShell for cloudbase-init with KMS activation), so a wrong answer from the operator
 * would make desktops that never customize. The first disk holding an OS answers; a snapshot
 * the inspector cannot read is 'unknown', which customizes as Linux does.
 */
export async function guestOsOf(layers: { path: string }[]): Promise<GuestOs> {
  for (const layer of layers) {
    // The site's own snapshot layers: QEMU follows their backing chain.
    const source = await openSource(layer.path, undefined, { trusted: true }).catch(() => null);
    if (!source) continue;
    try {
      const report = await inspectDisk(source.reader);
      if (report.os.type !== 'unknown') return report.os.type;
    } catch {
      // Not a disk the inspector knows (a test guest's raw data disk): look at the next one.
    } finally {
      await source.close();
    }
  }
  return 'unknown';
}

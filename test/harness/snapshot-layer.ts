import { dirname, join } from 'node:path';
import type { SiteProcess } from './site-process.js';

/**
 * The overlay file snapshot SNAP made on a disk (the layer the guest writes into after it):
 * in the pool's .layers folder, named by the disk's id (src/vms/vm-snapshots.ts).
 */
export async function snapshotLayer(
  site: SiteProcess,
  disk: { name: string; path: string },
  snap: string,
): Promise<string> {
  const { id } = await site.cliJson<{ id: string }>('disk', 'show', disk.name);
  return join(dirname(disk.path), '.layers', `${id}.${snap}.qcow2`);
}

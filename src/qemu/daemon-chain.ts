import { MamoriError } from '../core/mamori-error.js';

/*
 * How a chain of images is described to QEMU as blockdev objects: explicit node names and
 * explicit backing between the layers listed, for a storage daemon's command line
 * (storage-daemon.ts's argv). Pure data, no process. (The staging daemon opens replica chains
 * layer by layer over QMP instead: replication/resident-chains.ts.)
 */

/** One image of a chain; layers are listed bottom (base) to top. */
export interface DaemonLayer {
  file: string;
  format: 'qcow2' | 'raw';
}

/**
 * A chain of images opened with explicit node names, as vm-argv does for VMs: each listed
 * layer's `backing` is the layer below it. The bottom layer is opened as vm-argv opens a disk's
 * image, with the backing its header names, if any: a VM recovered from a replica point or a
 * linked clone has its image on a backing file that is no layer of the chain, and the guest reads
 * through it. (It was `backing: null`, which reads every cluster the image does not hold as
 * zeros: the final sync of such a stopped VM sent zeros for the blocks it had partly written, and
 * a planned failback lost them.) The top node is named `id`; lower layers `id-l<k>`; each format
 * node sits on a protocol node `<node>-file`. Lower layers are always read-only; the top is
 * writable unless `readOnly`.
 */
export interface DaemonChain {
  id: string;
  layers: DaemonLayer[];
  readOnly?: boolean;
  /**
   * Open with O_DIRECT (cache.direct). Needed to read a block device that a mounted
   * filesystem writes to: its file data goes to the device past the page cache, so a
   * buffered reader could be served stale pages.
   */
  directIo?: boolean;
}

/**
 * The blockdev objects of a chain, bottom first, each format node on its protocol node, for
 * the command line.
 */
export function chainBlockdevs(chain: DaemonChain): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const [k, layer] of chain.layers.entries()) {
    const top = k === chain.layers.length - 1;
    const node = chainNodeName(chain.id, k, chain.layers.length);
    const readOnly = !top || chain.readOnly === true;
    out.push({
      driver: layer.file.startsWith('/dev/') ? 'host_device' : 'file',
      filename: layer.file,
      'node-name': `${node}-file`,
      'read-only': readOnly,
      ...(chain.directIo === true ? { cache: { direct: true } } : {}),
    });
    const fmt: Record<string, unknown> = {
      driver: layer.format,
      file: `${node}-file`,
      'node-name': node,
      'read-only': readOnly,
    };
    if (k > 0 && layer.format === 'qcow2') fmt['backing'] = chainNodeName(chain.id, k - 1, chain.layers.length);
    else if (k > 0)
      throw new MamoriError('INVALID_INPUT', `chain ${chain.id}: a raw image can only be the bottom layer`, {
        details: { chain: chain.id, layer: layer.file },
      });
    out.push(fmt);
  }
  return out;
}

/** Node name of layer k of a chain of n layers: the top is the chain id itself. */
export function chainNodeName(chainId: string, k: number, n: number): string {
  return k === n - 1 ? chainId : `${chainId}-l${k}`;
}

import { join } from 'node:path';
import { StorageDaemon } from '../../src/qemu/storage-daemon.js';
import type { ChainLayer } from '../../src/replication/replica-chain.js';

/**
 * A cycle's staging chain served writable over NBD on a unix socket: the reprotect bench's
 * stand-in for the recovery site (it counts bytes, not time, so neither the site's TLS nor
 * its long-lived staging daemon matter there).
 */
export async function serveStaging(
  dir: string,
  layers: ChainLayer[],
): Promise<{ daemon: StorageDaemon; socketPath: string }> {
  const socketPath = join(dir, 'sd-nbd.sock');
  const daemon = await StorageDaemon.start({
    qmpSocket: join(dir, 'sd-qmp.sock'),
    pidFile: join(dir, 'sd.pid'),
    chains: [{ id: 'disk0', layers }],
    nbd: { listen: { type: 'unix', path: socketPath } },
    exports: [{ id: 'disk0', node: 'disk0', name: 'disk0', writable: true }],
  });
  return { daemon, socketPath };
}

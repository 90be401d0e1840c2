import { join } from 'node:path';
import { freePort } from '../../src/core/free-port.js';
import { StorageDaemon } from '../../src/qemu/storage-daemon.js';
import type { ChainLayer } from '../../src/replication/replica-chain.js';
import type { SiteTls } from '../../src/sites/site-tls.js';
import { writeQemuTlsCreds } from '../../src/sites/qemu-tls-creds.js';

/**
 * A cycle's staging chain served writable over NBD+TLS on loopback, as the recovery site's
 * replica service serves it: the benches' stand-in for that site (without its database).
 */
export async function serveStaging(
  dir: string,
  layers: ChainLayer[],
  site: SiteTls,
  peerCaPem: string,
): Promise<{ daemon: StorageDaemon; port: number }> {
  const tlsDir = await writeQemuTlsCreds({ dir: join(dir, 'tls'), site, peerCaPem, endpoint: 'server' });
  const port = await freePort('127.0.0.1');
  const daemon = await StorageDaemon.start({
    qmpSocket: join(dir, 'sd-qmp.sock'),
    pidFile: join(dir, 'sd.pid'),
    chains: [{ id: 'disk0', layers }],
    nbd: { listen: { type: 'inet', host: '127.0.0.1', port }, tls: { dir: tlsDir, verifyPeer: true } },
    exports: [{ id: 'disk0', node: 'disk0', name: 'disk0', writable: true }],
  });
  return { daemon, port };
}

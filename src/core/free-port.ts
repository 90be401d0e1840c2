import { createServer } from 'node:net';

/**
 * An ephemeral TCP port on `host`, for servers that cannot report the port they bound
 * (qemu-storage-daemon, QEMU's NBD server and migration listener). Another process could
 * take it before the server binds; the server then fails to start, and the caller retries.
 */
export async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

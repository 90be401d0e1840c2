import { join } from 'node:path';

/** Where a site keeps things inside its data folder. One place, so nothing guesses. */
export class SitePaths {
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }
  get database(): string {
    return join(this.root, 'mamori.db');
  }
  get adminToken(): string {
    return join(this.root, 'admin-token');
  }
  /** The at-rest key the database's secrets are sealed with (src/core/secret-box.ts); never in the database. */
  get secretKey(): string {
    return join(this.root, 'secret.key');
  }
  /** Files only this site's user may read: `serve` refuses to start if others can (data-dir-modes.ts). */
  get secretFiles(): string[] {
    const db = this.database;
    return [
      db,
      `${db}-wal`,
      `${db}-shm`,
      this.secretKey,
      this.adminToken,
      ...['ca-key.pem', 'server-key.pem', 'client-key.pem'].map((f) => join(this.tlsDir, f)),
    ];
  }
  /** The URL the server listens on, for `mamori --data DIR`. */
  get urlFile(): string {
    return join(this.root, 'url');
  }
  get serverPid(): string {
    return join(this.root, 'server.pid');
  }
  /** The site's CA, its server and client certificates (src/sites/site-tls.ts). */
  get tlsDir(): string {
    return join(this.root, 'tls');
  }
  /** Scratch state of conversions in flight, one folder per job (a P2V target's storage daemon). */
  get conversionsDir(): string {
    return join(this.root, 'conversions');
  }
  /** Where `mamori export` writes unless told another folder. */
  get exportsDir(): string {
    return join(this.root, 'exports');
  }
  pool(name: string): string {
    return join(this.root, 'pools', name);
  }
  vmDir(vmId: string): string {
    return join(this.root, 'vms', vmId);
  }
  /** The VM's serial console log (one path, not vmRuntime's five: GET /vms names it for every VM). */
  serialLog(vmId: string): string {
    return join(this.root, 'vms', vmId, 'serial.log');
  }
  vmRuntime(vmId: string): {
    qmpSocket: string;
    pidFile: string;
    serialLog: string;
    uefiVars: string;
    guestAgentSocket: string;
  } {
    const dir = this.vmDir(vmId);
    return {
      qmpSocket: join(dir, 'qmp.sock'),
      pidFile: join(dir, 'qemu.pid'),
      serialLog: this.serialLog(vmId),
      uefiVars: join(dir, 'OVMF_VARS.fd'),
      guestAgentSocket: join(dir, 'qga.sock'),
    };
  }
}

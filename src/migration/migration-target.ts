export interface IncomingTarget {
  vmId: string;
  host: string;
  /** QEMU's NBD server: the source mirrors each disk into export disk<i>. */
  nbdPort: number;
  exports: string[];
  /** QEMU's migration listener (TLS). */
  migrationPort: number;
}

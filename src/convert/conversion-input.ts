import type { ImageFormat } from '../disks/disk-record.js';
import type { NbdTlsMaterial } from '../nbd/nbd-tls-creds.js';

/** What a conversion is asked to do: the source (whichever kind) and the VM it becomes. */
export interface ConvertInput {
  /**
   * Absolute path on the site's host (a block device or an image QEMU reads); any NBD server
   * as nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH (nbds: with TLS); or,
   * with agentKey, a P2V agent's nbd://HOST:PORT.
   */
  source: string;
  /** The key `mamori p2v-agent` printed: makes an nbd://HOST:PORT source a P2V agent. */
  agentKey?: string;
  /** For nbds:// and nbds+unix:// sources: the CA, and a client certificate if the server verifies clients. */
  tls?: NbdTlsMaterial;
  /** P2V: the remainder below which the passes stop and the frozen last pass runs (default 64 MiB). */
  convergeBelowMiB?: number;
  /** A QEMU machine type (`pc-q35-7.2`) or alias (`q35`, `pc`); default q35, pinned to its version. */
  machineType?: string;
  name: string;
  format?: ImageFormat;
  start?: boolean;
  memoryMiB?: number;
  vcpus?: number;
}

/** What `convert --check` asks about: a source as `start` takes it, no VM name needed. */
export type CheckInput = Omit<ConvertInput, 'name' | 'start' | 'format' | 'convergeBelowMiB'> & { name?: string };

import type { ContinuousSettings } from '../store/records/replica-record.js';

/**
 * What a replica-aware live migration does once the VM runs at the destination, given to
 * LiveMigrations at construction. The composition root builds it from the recovery plans'
 * reprotect primitives: the VM here is marked superseded, its disks seed the reverse replica,
 * and the destination replicates the VM back here.
 */
export interface ReverseReplication {
  /** generation: the failover generation the VM here is superseded by. */
  reverse(
    peer: string,
    vmId: string,
    generation: number,
    opts: { rpoSeconds: number; keepPoints: number; continuous?: ContinuousSettings; group?: string },
  ): Promise<void>;
}

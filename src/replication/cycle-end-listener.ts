import type { CycleEnded } from './replication-service.js';

/**
 * Told of every replication cycle that ended, ok or failed, given to ReplicationService at
 * construction. SiteMetrics is the real one (cycles, durations and bytes sent). It is called
 * without being awaited, so it must not throw.
 */
export interface CycleEndListener {
  cycleEnded(e: CycleEnded): void;
}

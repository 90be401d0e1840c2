/** What a CycleEndListener hears at the end of each cycle (the metrics count them). */
export interface CycleEnded {
  vmId: string;
  vm: string;
  outcome: 'ok' | 'failed';
  durationMs: number;
  bytesSent: number;
}

/**
 * Told of every replication cycle that ended, ok or failed, given to ReplicationService at
 * construction. SiteMetrics is the real one (cycles, durations and bytes sent). It is called
 * without being awaited, so it must not throw.
 */
export interface CycleEndListener {
  cycleEnded(e: CycleEnded): void;
}

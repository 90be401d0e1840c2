import type { ReplicationSummary } from '../store/repos/replication-repo.js';
import type { CycleStats, ReplicaStorage } from '../store/records/replica-record.js';
import type { JournalStatus } from './continuous-replication.js';
import { rpoStatus } from './rpo-scheduler.js';

/* A protected VM's replication as `replicate status` and GET /replication show it. */

export interface ReplicationStatus {
  vm: string;
  to: string;
  state: string;
  rpoSeconds: number;
  points: number;
  lastPointAt: string | null;
  lagSeconds: number | null;
  rpoViolated: boolean;
  /** When the open RPO-violation incident began; null when the RPO holds. */
  rpoViolatedSince: string | null;
  nextCycleAt: string | null;
  failures: number;
  lastError: string | null;
  lastCycle: CycleStats | null;
  bandwidthBps: number | null;
  /** The VM's cycle now: running, queued for a slot on its peer link (at queuePlace, 1 = next), or neither. */
  cycle: 'running' | 'queued' | 'idle';
  /** Its place among the due VMs of its peer link, 1 = next; null when not queued. */
  queuePlace: number | null;
  /** The replication generation: the dirty bitmap's, raised by each committed cycle; null before the first. */
  generation: number | null;
  /** Storage at the recovery site (points, chain length, bytes), as its last commit reported; null before. */
  replica: ReplicaStorage | null;
  /** Continuous replication's settings (seconds); null: cycles only. */
  continuous: { checkpointSeconds: number; journalSeconds: number; appCheckpointSeconds: number | null } | null;
  /** The continuous journal's session now; null when none runs (cycles only, paused, or the VM stopped). */
  journal: JournalStatus | null;
}

/**
 * The status of one replication from its row and what runs now (the scheduler's timer and
 * queue, the journal's session). A continuous replica's newest point in time is the journal's
 * when it is newer than the last cycle's point: lag and RPO are measured from it, as the RPO
 * incident measures them (replication-incidents.ts).
 */
export function replicationStatusOf(
  r: ReplicationSummary,
  live: {
    rpoViolatedSince: string | null;
    nextCycleAt: number | null | undefined;
    queue: { running: boolean; place: number | null };
    journal: JournalStatus | null;
    /** The newest checkpoint the recovery site holds (ms since the epoch), or null. */
    journalAt: number | null;
  },
  now = Date.now(),
): ReplicationStatus {
  const pointAt = r.lastPointAt ? Date.parse(r.lastPointAt) : null;
  const freshest = live.journalAt !== null && (pointAt === null || live.journalAt > pointAt) ? live.journalAt : pointAt;
  const s = rpoStatus({ rpoMs: r.rpoMs, lastPointAt: freshest }, now);
  return {
    vm: r.vmName,
    to: r.peer,
    state: r.state,
    rpoSeconds: r.rpoMs / 1000,
    points: r.keepPoints,
    lastPointAt: r.lastPointAt,
    lagSeconds: s.lagMs === null ? null : Math.round(s.lagMs / 100) / 10,
    rpoViolated: s.violated,
    rpoViolatedSince: live.rpoViolatedSince,
    nextCycleAt: live.nextCycleAt ? new Date(live.nextCycleAt).toISOString() : null,
    failures: r.failures,
    lastError: r.lastError,
    lastCycle: r.lastCycle,
    bandwidthBps: r.bandwidthBps,
    cycle: live.queue.running ? 'running' : live.queue.place !== null ? 'queued' : 'idle',
    queuePlace: live.queue.place,
    generation: r.generation,
    replica: r.replica,
    continuous:
      r.continuous === null
        ? null
        : {
            checkpointSeconds: r.continuous.checkpointMs / 1000,
            journalSeconds: r.continuous.journalMs / 1000,
            appCheckpointSeconds: r.continuous.appCheckpointMs == null ? null : r.continuous.appCheckpointMs / 1000,
          },
    journal: live.journal,
  };
}

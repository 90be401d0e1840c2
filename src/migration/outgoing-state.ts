import type { Job } from '../jobs/job-journal.js';
import type { IncomingTarget } from './migration-target.js';

/** What a migration job keeps in its journal context (the source's record of the migration). */
export interface MigrationContext {
  vmId: string;
  to: string;
  /** Written the moment QEMU reported `completed`: from then on the destination's copy is the VM. */
  switched?: boolean;
  /** This migration's TLS credentials object in the source QEMU (one per migration: see rollBackMigration). */
  tlsId?: string;
  /** Replica-aware: the replication that is reversed afterwards. */
  replication: {
    generation: number;
    pointId: string;
    rpoSeconds: number;
    keepPoints: number;
    group: string | null;
  } | null;
  disks: number;
  target: IncomingTarget | null;
}

/**
 * switched: the destination's copy is the VM (run it); rolled-back: the VM ran on here (remove
 * the copy); in-progress: not decided yet; unknown: no migration of this VM to that site here.
 */
export type OutgoingState = 'switched' | 'rolled-back' | 'in-progress' | 'unknown';

/**
 * The source's answer, from its journal and its QEMU (whose `completed` may be newer than the
 * journal: once QEMU completed, this side never continues the guest, so the copy must run).
 */
export function outgoingStateOf(
  job: Pick<Job, 'state' | 'steps' | 'context'> | null,
  qemuStatus: string | null,
  peer: string,
): OutgoingState {
  const ctx = job?.context as Partial<MigrationContext> | null | undefined;
  if (!job || !ctx || ctx.to !== peer) return 'unknown';
  const switched =
    ctx.switched === true ||
    qemuStatus === 'completed' ||
    job.state === 'succeeded' ||
    job.steps.some((s) => (s.name === 'switchover' || s.name === 'finish') && s.state !== 'pending');
  if (switched) return 'switched';
  return job.state === 'running' ? 'in-progress' : 'rolled-back';
}

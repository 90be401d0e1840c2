import type { ContinuousSettings } from '../store/records/replica-record.js';
import { defineJobKind } from '../jobs/job-kind.js';
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
    /** Continuous before: the VM replicates back continuously, with these settings. */
    continuous?: ContinuousSettings | null;
  } | null;
  disks: number;
  target: IncomingTarget | null;
  /** Live figures while the RAM moves (the console's migration view). */
  live?: {
    status?: string;
    ramTransferred: number;
    ramRemaining: number;
    ramTotal: number;
    dirtyRateBps: number;
    expectedDowntimeMs: number | null;
    diskMirrored: number;
  };
}

/**
 * Rollback before switchover (the VM ran on here, the destination removes its copy); after it,
 * recovery finishes the move instead: the destination's copy is the VM then.
 */
export const MIGRATION_JOB = defineJobKind<MigrationContext>({
  kind: 'vm-migration',
  policy: 'rollback',
  steps: ['prepare', 'mirror', 'migrate', 'switchover', 'finish'],
  summary: 'A running VM moved to a paired site without shared storage (or onto its replica)',
  context: {
    version: 1,
    schema: {
      type: 'object',
      required: ['vmId', 'to', 'disks', 'target', 'replication'],
      properties: {
        vmId: { type: 'string' },
        to: { type: 'string' },
        switched: { type: 'boolean' },
        tlsId: { type: 'string' },
        disks: { type: 'integer' },
        replication: {
          type: ['object', 'null'],
          required: ['generation', 'pointId', 'rpoSeconds', 'keepPoints', 'group'],
        },
        target: {
          type: ['object', 'null'],
          required: ['vmId', 'host', 'nbdPort', 'exports', 'migrationPort'],
        },
        live: { type: 'object' },
      },
    },
  },
});

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
  job: Pick<Job, 'state' | 'steps'> | null,
  ctx: MigrationContext | null,
  qemuStatus: string | null,
  peer: string,
): OutgoingState {
  if (!job || !ctx || ctx.to !== peer) return 'unknown';
  const switched =
    ctx.switched === true ||
    qemuStatus === 'completed' ||
    job.state === 'succeeded' ||
    job.steps.some((s) => (s.name === 'switchover' || s.name === 'finish') && s.state !== 'pending');
  if (switched) return 'switched';
  return job.state === 'running' ? 'in-progress' : 'rolled-back';
}

import { defineJobKind, NO_CONTEXT, type JobKind } from '../jobs/job-kind.js';
import type { PoolOperation } from '../store/repos/pool-records.js';

/*
 * What a pool is doing (PoolOperation, store/repos/pool-records.ts) is recorded in its row
 * before the work starts (and the desktops still to do marked pending), so a server stopped
 * mid-way takes it up at its next start from where it stopped, as a recovery plan's run does.
 */

/** The pool's state while the operation runs (`pool list` shows it). */
export const OPERATION_STATE: Record<PoolOperation['kind'], string> = {
  provision: 'provisioning',
  delete: 'deleting',
  refresh: 'refreshing',
  recompose: 'recomposing',
  rebalance: 'rebalancing',
  resize: 'resizing',
};

/**
 * The job kind of each operation (jobs journal, `mamori job list`). Resume: what the operation
 * still has to do is in the pool's row (its operation and the desktops marked pending), not in
 * the job, so the job has no context; the next start takes the operation up where it stopped.
 */
export const OPERATION_JOB: Record<PoolOperation['kind'], JobKind<null>> = {
  provision: poolKind('provision', 'Desktops made from the master snapshot: replicas, desktops'),
  delete: poolKind('delete', "The pool's desktops, replicas and address reservations removed"),
  refresh: poolKind('refresh', 'Desktops put back to their replica (their changes dropped)'),
  recompose: poolKind('recompose', 'Desktops moved onto a new master snapshot: replicas, desktops, cleanup'),
  rebalance: poolKind('rebalance', "Desktops' replicas spread over the pool's datastores"),
  resize: poolKind('resize', 'Desktops added or removed to reach the new size'),
};

function poolKind(op: PoolOperation['kind'], summary: string): JobKind<null> {
  return defineJobKind<null>({ kind: `pool-${op}`, policy: 'resume', steps: null, summary, context: NO_CONTEXT });
}

/** The recorded operation of a pool row; rows from before operations were recorded fall back on their state. */
export function recordedOperation(row: { state: string; operation: PoolOperation | null }): PoolOperation | null {
  if (row.operation) return row.operation;
  if (row.state === 'deleting') return { kind: 'delete' };
  if (row.state === 'provisioning' || row.state === 'interrupted') return { kind: 'provision' };
  return null;
}

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

/** The job kind of each operation (jobs journal, `mamori job list`). */
export const OPERATION_JOB: Record<PoolOperation['kind'], string> = {
  provision: 'pool-provision',
  delete: 'pool-delete',
  refresh: 'pool-refresh',
  recompose: 'pool-recompose',
  rebalance: 'pool-rebalance',
  resize: 'pool-resize',
};

/** The recorded operation of a pool row; rows from before operations were recorded fall back on their state. */
export function recordedOperation(row: { state: string; operation: PoolOperation | null }): PoolOperation | null {
  if (row.operation) return row.operation;
  if (row.state === 'deleting') return { kind: 'delete' };
  if (row.state === 'provisioning' || row.state === 'interrupted') return { kind: 'provision' };
  return null;
}

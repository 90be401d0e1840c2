/* A plan run as the store keeps it (issue 20: store/ knows rows, not services); plans/ re-exports these. */
import type { DataLoss } from './data-loss-record.js';

export const RUN_MODES = ['test', 'cleanup', 'planned', 'disaster', 'reprotect', 'failback'] as const;
export type RunMode = (typeof RUN_MODES)[number];

/** running: steps in flight; waiting: at a prompt; interrupted: the server died during it (resume it). */
export type RunState = 'running' | 'waiting' | 'interrupted' | 'done' | 'cancelled';
export type RunResult = 'success' | 'warnings' | 'errors' | 'cancelled';

export type RunStepKind =
  | 'cleanup-vm'
  // array-based groups: whole devices, through the storage adapters at both sites
  | 'array-test-start'
  | 'array-test-stop'
  | 'array-prepare-failover'
  | 'array-failover'
  | 'array-prepare-reverse'
  | 'array-reverse'
  | 'shutdown'
  | 'promote'
  | 'recover'
  | 'power-on'
  | 'command'
  | 'prompt'
  // reprotect: the old protected site seeds a replica from its superseded VM; this site replicates back.
  | 'seed-peer'
  | 'replicate'
  // failback: shut down here and sync, the peer promotes and recovers, then reprotect the other way.
  | 'shutdown-local'
  | 'promote-peer'
  | 'recover-peer'
  | 'seed-local'
  | 'replicate-peer';
export type RunStepState = 'pending' | 'running' | 'done' | 'failed' | 'skipped';

export interface RunStep {
  id: string;
  kind: RunStepKind;
  label: string;
  /** The protected VM the step is about (by name), if any. */
  vm?: string;
  priority?: number;
  state: RunStepState;
  startedAt?: string;
  endedAt?: string;
  message?: string;
  /** Index into the plan's steps, for command and prompt steps. */
  planStep?: number;
  /** The recovered VM's id, for cleanup steps. */
  vmId?: string;
  /** The array-based protection group, for array steps. */
  group?: string;
}

export interface RunVmOutcome {
  vm: string;
  priority: number;
  recoveredVmId?: string;
  point?: { id: string; time: string };
  /** Seconds from the run's start to the recovered VM's first heartbeat. */
  rtoSec?: number;
  heartbeatAt?: string;
  /** The window of writes the point may not hold, as bounds (data-loss-bounds.ts); absent: unknown. */
  dataLoss?: DataLoss;
  /**
   * Runs journalled before the bounds: one figure, measured as a lower bound. Read only
   * (storedDataLoss shows it as "at least"); never written now.
   */
  dataLossSec?: number | null;
  /** Where the bounds came from, in words. */
  dataLossNote?: string;
  ip?: string;
  protectedStoppedAt?: string;
  /**
   * Array-based, planned: the points the protected site's array took of this VM's devices once
   * the group's VMs were off (the prepare step). Known by the order of the steps, not by clocks:
   * an array's point time is whole seconds, too coarse to place it after the shutdown.
   */
  pointsTakenOff?: string[];
  forcedOff?: boolean;
  /** Reprotect: what the first reverse cycle sent (only the differences) against the disk size. */
  reprotect?: { mode: string; bytesSent: number; diskBytes: number; bytesChanged?: number };
  error?: string;
}

/** What a run made of an array-based group's devices at this site. */
export interface RunArrayState {
  /** The point (array snapshot) the devices' data is from, and when it was taken. */
  point: string;
  pointAt: string | null;
  /** Device id (the target device) to where its data is mounted here: a test copy or the failed-over device. */
  paths: Record<string, string>;
  /** Reprotect: what the first sync the other way sent, per device. */
  bytesSent?: Record<string, number>;
}

export interface PlanRun {
  id: string;
  plan: string;
  mode: RunMode;
  state: RunState;
  peer: string;
  options: { pointTime?: string };
  snapshot: unknown;
  steps: RunStep[];
  vms: Record<string, RunVmOutcome>;
  /** Array-based groups, by name. */
  arrays: Record<string, RunArrayState>;
  result: RunResult | null;
  error: string | null;
  /** Set while waiting at a prompt. */
  prompt?: string;
  startedAt: string;
  endedAt: string | null;
  updatedAt: string;
}

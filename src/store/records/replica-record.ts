/* Replication's records as the store keeps them (issue 20: store/ knows rows, not services). */

/** crash: a point of a running VM's disks as they were; application: with the guest's filesystems frozen. */
export type PointConsistency = 'crash' | 'application';

export interface ReplicaDiskSpec {
  index: number;
  sizeBytes: number;
}

/** What a replica holds on disk, summed over its disks. */
export interface ReplicaStorage {
  points: number;
  /** The longest chain a read of the newest point opens (seed layers + base + points). */
  chainLength: number;
  /** Bytes allocated by the replica's own files. */
  bytes: number;
  /** Bytes of the seed layers it still reads through (a reprotect's old disk), until compaction. */
  seedBytes: number;
}

export interface ReplicaPointView {
  id: string;
  time: string;
  consistency: PointConsistency;
  committedAt: string;
  /** On a commit's answer: what the replica holds after it (the source shows it in its status). */
  storage?: ReplicaStorage;
}

/** A replica at the recovery site (the replicas row and its points). */
export interface ReplicaView {
  id: string;
  sourceSite: string;
  sourceVmId: string;
  vmName: string;
  disks: ReplicaDiskSpec[];
  keepPoints: number;
  points: ReplicaPointView[];
  /** Raised at each promotion (failover); the source learns its VM was superseded. */
  failoverGeneration: number;
  promotedAt: string | null;
  lastContactAt: string | null;
}

/** One cycle's figures as the source keeps them (replications.stats, the last few). */
export interface CycleStats {
  at: string;
  mode: 'full' | 'incremental' | 'resync';
  bytesSent: number;
  bytesChanged: number;
  durationMs: number;
  throughputBps: number;
  /** Bytes the cycle put on the link (framed, lz4 where it paid): with bytesChanged, what compression saved. */
  wireBytes?: number;
  /** What the replica held after this cycle's point (retention and compaction included). */
  replica?: ReplicaStorage;
}

/** Continuous replication's settings: a journal at the recovery site instead of cycles alone. */
export interface ContinuousSettings {
  /** Milliseconds between crash-consistent checkpoints (points in time). */
  checkpointMs: number;
  /** How far back the journal reaches, in milliseconds. */
  journalMs: number;
  /**
   * Milliseconds between application-consistent checkpoints (the guest frozen through its
   * agent); null: none. Rows written before it existed lack it (none).
   */
  appCheckpointMs?: number | null;
}

/** Source side: a protected VM and where its replica lives (a replications row). */
export interface ReplicationRecord {
  vmId: string;
  peer: string;
  replicaId: string;
  rpoMs: number;
  keepPoints: number;
  state: 'enabled' | 'paused';
  /** Generation of the dirty bitmap that counts changes since the newest point; 0: seeded, null: none yet. */
  generation: number | null;
  lastPointAt: string | null;
  lastPointId: string | null;
  failures: number;
  lastError: string | null;
  stats: CycleStats[];
  bandwidthBps: number | null;
  /** Null: replicated in cycles only. */
  continuous: ContinuousSettings | null;
  createdAt: string;
  updatedAt: string;
}

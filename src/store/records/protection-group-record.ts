/* An array-based protection group's binding and sync state, as the store keeps them (issue 20). */

/** What binds an array-based protection group to its storage (protection_groups.array_binding). */
export interface ArrayBinding {
  /** This site's storage array entry (`mamori array add`). */
  storage: string;
  arrayId: string;
  deviceIds: string[];
  /** The paired site that holds the devices' peers: where the group recovers. */
  peer: string;
  /** The group was paired with an array the compatibility guide does not support (--force). */
  forced: boolean;
  /** The compatibility guide's verdict when the group was made. */
  compat: string;
  /** mamori asks the array for a point on this RPO; null: the array keeps its own schedule (or `group sync`). */
  rpoSeconds: number | null;
}

/** A disk of a VM on an array-based group's devices, as the recovery site finds it on the peer device. */
export interface ArrayDisk {
  index: number;
  /** The device on the protected array, and its peer (what the recovery site fails over). */
  deviceId: string;
  peer: { arrayId: string; deviceId: string };
  /** The image's path inside the device (empty for a volume passed through as a raw device mapping). */
  relativePath: string;
  kind: 'image' | 'rdm';
  format: 'qcow2' | 'raw';
  sizeBytes: number;
}

/** The last syncs of an array-based group (protection_groups.array_sync). */
export interface ArraySyncState {
  /** When the newest point was taken (its sync started), and its name. */
  lastPointAt: string | null;
  lastPoint: string | null;
  /** What the last sync sent, over all the group's devices. */
  lastBytesSent: number | null;
  failures: number;
  lastError: string | null;
  lastAttemptEndedAt: string | null;
  /** Durations of recent successful syncs, newest last (the scheduler starts early by them). */
  recentMs: number[];
}

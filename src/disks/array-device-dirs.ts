/**
 * Where disks can be made on a replicated array device (array-based protection), given to
 * DiskService at construction. StorageArrays is the real one; a site without it refuses
 * `onArray` disks.
 */
export interface ArrayDeviceDirs {
  /** The mount point of a filesystem device of a storage entry's array, writable here. */
  deviceDir(storage: string, deviceId: string, arrayId?: string): Promise<string>;
}

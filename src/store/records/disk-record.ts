/** A disk as the site knows it: an image in a storage pool, or a raw device mapping. */
export interface DiskRecord {
  id: string;
  name: string;
  pool: string;
  kind: DiskKind;
  /** qcow2 | raw for images; raw for RDM (no image format between guest and device). */
  format: ImageFormat;
  path: string;
  sizeBytes: number;
  rdmMode: RdmMode | null;
  shared: boolean;
  vmId: string | null;
  ownedByVm: boolean;
  createdAt: string;
  /**
   * qcow2 overlays from external snapshots, oldest first, each backed by the layer before
   * it (the first by `path`). The guest writes into the last one.
   */
  overlays: string[];
}

/** The file the guest writes to now: the newest overlay, else the image or device itself. */
export function activeLayer(d: DiskRecord): { path: string; format: string } {
  const top = d.overlays.at(-1);
  return top ? { path: top, format: 'qcow2' } : { path: d.path, format: d.format };
}

export const DISK_KINDS = ['image', 'rdm'] as const;
export type DiskKind = (typeof DISK_KINDS)[number];
export const IMAGE_FORMATS = ['qcow2', 'raw'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];
/**
 * As in vSphere: `virtual` lets mamori layer snapshots and replication over the device;
 * `physical` hands the device to the guest, so both are refused.
 */
export const RDM_MODES = ['virtual', 'physical'] as const;
export type RdmMode = (typeof RDM_MODES)[number];

/**
 * The qcow2 layouts mamori makes images in, in one table: qemu-img-write.ts creates and
 * converts into them, qemu-img-read.ts measures what a copy in one would take.
 */

/**
 * How mamori lays out a new qcow2 (`-o`).
 * - `site`: 128 KiB clusters with extended L2 (32 subclusters each): first writes into fresh
 *   images and overlays are faster (notes/qemu-7.2.md). Every image and overlay of a site.
 * - `replica`: a desktop pool's replica is written once and only read after: extended L2
 *   entries (sub-cluster allocation, which the desktops' overlays keep for their writes)
 *   would only double its L2 tables, 256 KiB more per 4 GiB replica than plain 128 KiB
 *   clusters (bench/pools).
 * - `qemu-default`: no -o at all; a fleecing scratch image lives for one cycle.
 */
export const QCOW2_LAYOUTS = {
  site: 'cluster_size=131072,extended_l2=on',
  replica: 'cluster_size=131072',
  'qemu-default': null,
} as const;
export type Qcow2Layout = keyof typeof QCOW2_LAYOUTS;

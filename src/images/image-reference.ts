/**
 * Another file an image makes QEMU open. mamori reads these from the headers itself, because
 * asking QEMU would already have opened them.
 * - backing-file: qcow2's backing file (a `json:` one included);
 * - data-file: qcow2's external data file (incompatible feature bit 2, extension 0x44415441);
 * - extent: a VMDK descriptor's extent file (FLAT, SPARSE, VMFS, ...), which holds the disk's own data;
 * - parent: a VMDK delta disk's parent, a VHD or VHDX differencing disk's parent.
 */
export interface ImageReference {
  kind: 'backing-file' | 'data-file' | 'extent' | 'parent';
  /** As the image names it; '' when the image says there is one but not its name. */
  name: string;
  /** Where in the image: for messages. */
  where: string;
}

import { MamoriError } from '../core/mamori-error.js';
import type { ByteReader } from './byte-reader.js';
import type { LvmLogicalVolume, LvmVolumeGroup } from './lvm-metadata.js';

/**
 * A linear logical volume seen as plain bytes: each segment is a run of extents on one PV,
 * starting at that PV's first extent (pe_start). Reads that cross segments are split.
 * Anything but linear segments (striped over several PVs, mirrors, RAID, thin pools,
 * snapshots) is not read: the reason comes back instead of a reader.
 */
export function logicalVolumeReader(
  vg: LvmVolumeGroup,
  lv: LvmLogicalVolume,
  pvs: ReadonlyMap<string, ByteReader>,
): ByteReader | { unreadable: string } {
  const runs: { lvOffset: number; length: number; pv: ByteReader; pvOffset: number }[] = [];
  let expected = 0;
  for (const seg of lv.segments) {
    if (seg.linear === null)
      return { unreadable: `${vg.name}/${lv.name} has a ${seg.type} segment; only linear volumes are read` };
    if (seg.startExtent !== expected) return { unreadable: `${vg.name}/${lv.name} has a gap at extent ${expected}` };
    const pvInfo = vg.pvs.find((p) => p.name === seg.linear!.pv);
    const pv = pvs.get(seg.linear.pv);
    if (!pvInfo || !pv)
      return {
        unreadable: `${vg.name}/${lv.name} lies partly on ${seg.linear.pv}, a physical volume not on this disk`,
      };
    const pvOffset = pvInfo.peStartBytes + seg.linear.pvExtent * vg.extentBytes;
    const length = seg.extentCount * vg.extentBytes;
    if (pvOffset + length > pv.size)
      return { unreadable: `${vg.name}/${lv.name} runs past the end of ${seg.linear.pv}` };
    runs.push({ lvOffset: seg.startExtent * vg.extentBytes, length, pv, pvOffset });
    expected += seg.extentCount;
  }
  const size = expected * vg.extentBytes;
  return {
    size,
    async read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new MamoriError(
          'FILESYSTEM_UNREADABLE',
          `a read at byte ${offset} (${length} bytes) falls outside the ${size}-byte logical volume ${vg.name}/${lv.name}: its filesystem points past the volume's end`,
        );
      }
      const parts: Buffer[] = [];
      let at = offset;
      const end = offset + length;
      for (const r of runs) {
        if (at >= end) break;
        if (at >= r.lvOffset + r.length) continue;
        const n = Math.min(end, r.lvOffset + r.length) - at;
        parts.push(await r.pv.read(r.pvOffset + (at - r.lvOffset), n));
        at += n;
      }
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    },
  };
}

import type { ByteReader } from './byte-reader.js';
import { probeFilesystem, type FilesystemProbe } from './filesystem-probe.js';
import { parseVolumeGroup, readPhysicalVolume, type LvmVolumeGroup } from './lvm-metadata.js';
import { logicalVolumeReader } from './lvm-volume-reader.js';

/** A logical volume found on the disk, with what its superblock says. */
export interface FoundVolume {
  vg: string;
  name: string;
  size: number;
  /** Partitions holding its PVs. */
  partitions: number[];
  /** Its bytes, when it is linear and all its PVs are on this disk. */
  view: ByteReader | null;
  probe: FilesystemProbe | null;
}

/**
 * The logical volumes of the volume groups whose physical volumes are the given
 * partitions. Each PV carries the whole VG description; the copy with the highest seqno
 * wins (a PV left behind by an interrupted change may hold an older one).
 */
export async function findLogicalVolumes(
  pvs: { number: number; view: ByteReader }[],
  warnings: string[],
): Promise<FoundVolume[]> {
  const groups = new Map<string, LvmVolumeGroup>();
  const byUuid = new Map<string, { number: number; view: ByteReader }>();
  for (const p of pvs) {
    try {
      const pv = await readPhysicalVolume(p.view);
      if (!pv) continue;
      byUuid.set(pv.uuid, p);
      if (pv.metadata === null) continue;
      const vg = parseVolumeGroup(pv.metadata);
      const known = groups.get(vg.name);
      if (!known || known.seqno < vg.seqno) groups.set(vg.name, vg);
    } catch (e) {
      warnings.push(
        `partition ${p.number} is an LVM physical volume whose metadata could not be read: ${(e as Error).message}`,
      );
    }
  }
  const out: FoundVolume[] = [];
  for (const vg of groups.values()) {
    const readers = new Map<string, ByteReader>();
    const partitions: number[] = [];
    for (const pv of vg.pvs) {
      const found = byUuid.get(pv.uuid);
      if (found) {
        readers.set(pv.name, found.view);
        partitions.push(found.number);
      }
    }
    if (readers.size < vg.pvs.length)
      warnings.push(
        `volume group ${vg.name} has ${vg.pvs.length - readers.size} physical volume(s) on other disks; its volumes there are not read`,
      );
    for (const lv of vg.lvs.filter((x) => x.visible)) {
      const size = lv.segments.reduce((n, s) => n + s.extentCount, 0) * vg.extentBytes;
      const r = logicalVolumeReader(vg, lv, readers);
      if ('unreadable' in r) {
        warnings.push(`logical volume ${r.unreadable}`);
        out.push({ vg: vg.name, name: lv.name, size, partitions, view: null, probe: null });
        continue;
      }
      const probe = await probeFilesystem(r).catch((e: unknown) => {
        warnings.push(
          `logical volume ${vg.name}/${lv.name}: its superblock could not be read (${(e as Error).message})`,
        );
        return null;
      });
      out.push({ vg: vg.name, name: lv.name, size, partitions, view: r, probe });
    }
  }
  return out;
}

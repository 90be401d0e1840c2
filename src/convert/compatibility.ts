import type { InspectionReport } from '../inspect/inspector.js';
import { LDM_GUIDS } from '../inspect/partition-table.js';

/*
 * The compatibility report's rules (virt-v2v's, in short): what blocks a conversion, what
 * degrades it, and which virtio devices the guest can drive. Pure, over the inspection.
 */

/** What makes a conversion pointless or harmful: refused with the reason. */
export function conversionBlockers(r: InspectionReport): string[] {
  const out: string[] = [];
  if (r.partitions.length === 0 && r.partitionTable === 'none')
    out.push('it holds no partition table and no filesystem (an empty or unknown disk)');
  // MBR type 0x42, or GPT's LDM metadata and data partitions: volumes Windows' LDM database describes, not plain partitions.
  if (r.partitions.some((p) => p.typeId === '0x42' || LDM_GUIDS.has(p.typeId) || p.type.startsWith('Windows LDM')))
    out.push('it is a Windows dynamic disk (LDM): convert its volumes to basic disks in Windows first');
  return out;
}

/** What converts but degrades the result: the compatibility report. */
export function compatibilityWarnings(r: InspectionReport): string[] {
  const out = [...r.warnings];
  if (r.os.type === 'unknown')
    out.push(
      'no guest operating system was found (encrypted, or not one the inspector reads): the VM gets virtio disks and an e1000 NIC',
    );
  if (r.os.type === 'windows' && !guestHasVirtioBlk(r))
    out.push(
      'this Windows guest has no virtio storage driver (viostor): its disk is attached as SATA, which is slower; install virtio-win and switch the VM to virtio (vm create --disk-bus virtio) afterwards',
    );
  return out;
}

/** virtio-blk needs Linux 2.6.25 or later (or no OS we can tell), or viostor in Windows. */
export function guestHasVirtioBlk(r: InspectionReport): boolean {
  if (r.os.type === 'windows') return (r.os.virtioDrivers ?? []).includes('viostor');
  return true;
}

/** virtio-net needs Linux 2.6.25 or later, or netkvm in Windows. */
export function guestHasVirtioNet(r: InspectionReport): boolean {
  if (r.os.type === 'linux') return true;
  if (r.os.type === 'windows') return (r.os.virtioDrivers ?? []).includes('netkvm');
  return false;
}

import { sliceReader, type ByteReader } from './byte-reader.js';
import {
  BIOS_BOOT_GUID,
  ESP_GUID,
  LDM_GUIDS,
  SECTOR,
  readPartitionTable,
  type PartitionEntry,
} from './partition-table.js';
import { probeFilesystem, type FilesystemProbe } from './filesystem-probe.js';
import { Ext4Reader } from './ext4-reader.js';
import { FatReader } from './fat-reader.js';
import { linuxHostname, linuxKernels, linuxRelease, looksLikeLinuxRoot } from './linux-release.js';
import { NtfsReader } from './ntfs-reader.js';
import { windowsRelease } from './windows-release.js';
import { isMamoriError } from '../core/mamori-error.js';
import { findLogicalVolumes, type FoundVolume } from './lvm-volumes.js';

/**
 * What a disk is and what it boots, from metadata only: the partition table, each
 * partition's superblock, the ESP's folders or the MBR's boot code, and a few small files of
 * the root filesystem. Reads stay in the kilobytes-to-megabytes range whatever the disk size.
 */
/** A partition as the table gives it, plus what its superblock says (uuid: the filesystem's). */
export interface InspectedPartition extends Omit<PartitionEntry, 'uuid'> {
  /** GPT: the partition's own unique GUID. */
  partitionUuid?: string;
  filesystem: FilesystemProbe['type'] | null;
  label?: string;
  uuid?: string;
  features?: string[];
  encrypted?: boolean;
}

export interface InspectedOs {
  type: 'linux' | 'windows' | 'unknown';
  /** libguestfs' names: rhel, centos, debian, ubuntu, fedora, windows, ... */
  distro: string | null;
  product: string | null;
  major: number | null;
  minor: number | null;
  hostname: string | null;
  /** The partition number of the root filesystem (for a root on LVM: of its physical volume). */
  root: number | null;
  /** A root on LVM: its volume as VG/LV. */
  rootVolume?: string;
  kernels: string[];
  /** Windows: the build number, "Server" or "Client", and the virtio drivers installed. */
  build?: string | null;
  installationType?: string | null;
  virtioDrivers?: string[];
}

export interface InspectedVolume {
  vg: string;
  name: string;
  size: number;
  /** The partitions holding its physical volumes. */
  partitions: number[];
  filesystem: FilesystemProbe['type'] | null;
  label?: string;
  uuid?: string;
  features?: string[];
}

export interface InspectionReport {
  size: number;
  partitionTable: 'gpt' | 'mbr' | 'none';
  diskId: string | null;
  /** GPT only: the header the partitions come from. */
  gptHeader?: 'primary' | 'backup';
  firmware: 'uefi' | 'bios';
  /** Why that firmware (virt-v2v's rule). */
  firmwareReason: string;
  bootLoader: { kind: 'efi' | 'mbr' | 'bios-boot-partition' | 'none'; detail: string; files: string[] };
  partitions: InspectedPartition[];
  /** LVM logical volumes of the physical volumes on this disk, with their filesystems. */
  logicalVolumes: InspectedVolume[];
  os: InspectedOs;
  /** Things that block or degrade a conversion, or damage found on the way. */
  warnings: string[];
}

const NO_OS: InspectedOs = {
  type: 'unknown',
  distro: null,
  product: null,
  major: null,
  minor: null,
  hostname: null,
  root: null,
  kernels: [],
};

export async function inspectDisk(disk: ByteReader): Promise<InspectionReport> {
  const table = await readPartitionTable(disk);
  const warnings = [...table.warnings];
  const entries: PartitionEntry[] =
    table.type === 'none'
      ? [{ number: 0, start: 0, size: disk.size, type: 'whole disk', typeId: '' }]
      : table.partitions;
  const partitions: InspectedPartition[] = [];
  for (const p of entries) {
    const view = partitionView(disk, p);
    let fs: FilesystemProbe | null = null;
    if (view) {
      fs = await probeFilesystem(view).catch((e: unknown) => {
        warnings.push(`partition ${p.number}: its superblock could not be read (${(e as Error).message})`);
        return null;
      });
    } else {
      warnings.push(
        `partition ${p.number} lies outside the disk (bytes ${p.start}..${p.start + p.size} of ${disk.size}); it was not read`,
      );
    }
    if (fs?.encrypted)
      warnings.push(
        `partition ${p.number} is encrypted (LUKS ${fs.version ?? ''}); its contents cannot be inspected or checked for a guest OS`.replace(
          ' )',
          ')',
        ),
      );
    if (LDM_GUIDS.has(p.typeId) || p.typeId === '0x42')
      warnings.push(
        `partition ${p.number} belongs to a Windows dynamic disk (LDM): its volumes are not plain partitions and are not converted`,
      );
    if (table.type === 'none' && !fs) continue;
    const { uuid: partitionUuid, ...entry } = p;
    partitions.push({
      ...entry,
      ...(partitionUuid !== undefined ? { partitionUuid } : {}),
      filesystem: fs?.type ?? null,
      ...(fs?.label ? { label: fs.label } : {}),
      ...(fs?.uuid ? { uuid: fs.uuid } : {}),
      ...(fs?.features ? { features: fs.features } : {}),
      ...(fs?.encrypted ? { encrypted: true } : {}),
    });
  }
  const firmware = decideFirmware(table.type, entries);
  const bootLoader = await findBootLoader(disk, firmware.firmware, entries, partitions, warnings);
  const pvs = partitions
    .filter((p) => p.filesystem === 'lvm2_member')
    .flatMap((p) => {
      const view = partitionView(
        disk,
        entries.find((e) => e.number === p.number)!,
      );
      return view ? [{ number: p.number, view }] : [];
    });
  const volumes = pvs.length > 0 ? await findLogicalVolumes(pvs, warnings) : [];
  const os = await findOs(disk, entries, partitions, volumes, warnings);
  const logicalVolumes: InspectedVolume[] = volumes.map((v) => ({
    vg: v.vg,
    name: v.name,
    size: v.size,
    partitions: v.partitions,
    filesystem: v.probe?.type ?? null,
    ...(v.probe?.label ? { label: v.probe.label } : {}),
    ...(v.probe?.uuid ? { uuid: v.probe.uuid } : {}),
    ...(v.probe?.features ? { features: v.probe.features } : {}),
  }));
  return {
    size: disk.size,
    partitionTable: table.type,
    diskId: table.diskId,
    ...(table.gpt ? { gptHeader: table.gpt.header } : {}),
    firmware: firmware.firmware,
    firmwareReason: firmware.reason,
    bootLoader,
    partitions,
    logicalVolumes,
    os,
    warnings,
  };
}

function partitionView(disk: ByteReader, p: PartitionEntry): ByteReader | null {
  if (p.start >= disk.size || p.size <= 0) return null;
  return sliceReader(disk, p.start, Math.min(p.size, disk.size - p.start));
}

/** virt-v2v's rule: UEFI when the disk has an EFI System Partition and no BIOS boot partition. */
function decideFirmware(
  table: 'gpt' | 'mbr' | 'none',
  parts: PartitionEntry[],
): { firmware: 'uefi' | 'bios'; reason: string } {
  const esp = parts.find((p) => p.typeId === ESP_GUID || p.typeId === '0xef');
  const biosBoot = parts.find((p) => p.typeId === BIOS_BOOT_GUID);
  if (esp && !biosBoot)
    return {
      firmware: 'uefi',
      reason: `partition ${esp.number} is an EFI System Partition and there is no BIOS boot partition`,
    };
  if (esp && biosBoot)
    return {
      firmware: 'bios',
      reason: `an EFI System Partition (${esp.number}) and a BIOS boot partition (${biosBoot.number}): the disk boots BIOS`,
    };
  return { firmware: 'bios', reason: table === 'none' ? 'no partition table' : 'no EFI System Partition' };
}

async function findBootLoader(
  disk: ByteReader,
  firmware: 'uefi' | 'bios',
  entries: PartitionEntry[],
  parts: InspectedPartition[],
  warnings: string[],
): Promise<InspectionReport['bootLoader']> {
  if (firmware === 'uefi') {
    const esp = entries.find((p) => p.typeId === ESP_GUID || p.typeId === '0xef')!;
    const view = partitionView(disk, esp);
    const files = view
      ? await efiBinaries(view).catch((e: unknown) => {
          warnings.push(`the EFI System Partition (${esp.number}) could not be read: ${(e as Error).message}`);
          return [];
        })
      : [];
    if (files.length === 0) {
      warnings.push(
        `the EFI System Partition (${esp.number}) holds no EFI binaries under /EFI: the disk will not boot under UEFI as it is`,
      );
      return { kind: 'none', detail: 'no EFI binaries on the ESP', files };
    }
    return { kind: 'efi', detail: `EFI binaries on the ESP (partition ${esp.number})`, files };
  }
  const biosBoot = entries.find((p) => p.typeId === BIOS_BOOT_GUID);
  if (biosBoot) {
    const view = partitionView(disk, biosBoot);
    const head = view ? await view.read(0, Math.min(SECTOR, view.size)) : Buffer.alloc(0);
    if (head.some((b) => b !== 0))
      return {
        kind: 'bios-boot-partition',
        detail: `GRUB's core image in the BIOS boot partition (${biosBoot.number})`,
        files: [],
      };
  }
  const mbr = disk.size >= SECTOR ? await disk.read(0, SECTOR) : Buffer.alloc(SECTOR);
  const code = mbr.subarray(0, 440);
  if (code.every((b) => b === 0)) {
    if (parts.length > 0) warnings.push('the MBR holds no boot code: the disk will not boot under BIOS as it is');
    return { kind: 'none', detail: 'no boot code in the MBR', files: [] };
  }
  const text = code.toString('latin1');
  const detail = text.includes('GRUB')
    ? 'GRUB boot code in the MBR'
    : /Invalid partition table|Missing operating system|Error loading operating system/.test(text)
      ? 'Windows boot code in the MBR'
      : /SYSLINUX|MBR\s?\d/.test(text)
        ? 'SYSLINUX boot code in the MBR'
        : 'boot code in the MBR (not recognized)';
  return { kind: 'mbr', detail, files: [] };
}

/** *.efi files in /EFI and its folders, as paths on the ESP. */
async function efiBinaries(esp: ByteReader): Promise<string[]> {
  const fat = await FatReader.open(esp);
  const top = (await fat.listDir('/EFI')) ?? [];
  const out: string[] = [];
  for (const dir of top.filter((e) => e.type === 'dir')) {
    for (const f of (await fat.listDir(`/EFI/${dir.name}`)) ?? []) {
      if (f.type === 'file' && /\.efi$/i.test(f.name)) out.push(`/EFI/${dir.name}/${f.name}`);
    }
  }
  for (const f of top) if (f.type === 'file' && /\.efi$/i.test(f.name)) out.push(`/EFI/${f.name}`);
  return out.sort();
}

/** An ext2/3/4 filesystem that may hold a Linux root: on a partition, or on an LVM volume. */
interface ExtCandidate {
  key: string;
  partition: number;
  volume?: string;
  filesystem: string;
  view: ByteReader | null;
}

const EXT = new Set(['ext2', 'ext3', 'ext4']);

async function findOs(
  disk: ByteReader,
  entries: PartitionEntry[],
  parts: InspectedPartition[],
  volumes: FoundVolume[],
  warnings: string[],
): Promise<InspectedOs> {
  const candidates: ExtCandidate[] = [
    ...parts
      .filter((p) => p.filesystem !== null && EXT.has(p.filesystem))
      .map((p) => ({
        key: `partition ${p.number}`,
        partition: p.number,
        filesystem: p.filesystem!,
        view: partitionView(
          disk,
          entries.find((e) => e.number === p.number)!,
        ),
      })),
    // Installers put the root on LVM (RHEL's lv_root, Debian's VG-root); /boot stays a partition.
    ...volumes
      .filter((v) => v.probe !== null && EXT.has(v.probe.type))
      .map((v) => ({
        key: `logical volume ${v.vg}/${v.name}`,
        partition: v.partitions[0]!,
        volume: `${v.vg}/${v.name}`,
        filesystem: v.probe!.type,
        view: v.view,
      })),
  ];
  const opened = new Map<string, Ext4Reader>();
  const open = async (c: ExtCandidate): Promise<Ext4Reader | null> => {
    if (opened.has(c.key)) return opened.get(c.key)!;
    const fs = c.view
      ? await Ext4Reader.open(c.view).catch((e: unknown) => {
          warnings.push(`${c.key} (${c.filesystem}) could not be read: ${isMamoriError(e) ? e.message : String(e)}`);
          return null;
        })
      : null;
    if (fs) opened.set(c.key, fs);
    return fs;
  };
  for (const c of candidates) {
    const fs = await open(c);
    if (!fs || !(await looksLikeLinuxRoot(fs).catch(() => false))) continue;
    try {
      const release = await linuxRelease(fs);
      const hostname = await linuxHostname(fs);
      let kernels = await linuxKernels(fs);
      // A separate /boot: the ext filesystem whose top folder holds the kernels.
      for (const other of candidates) {
        if (kernels.length > 0 || other.key === c.key) continue;
        const b = await open(other);
        if (b)
          kernels = await linuxKernels({
            readFile: (x) => b.readFile(x),
            listDir: (x) => b.listDir(x === '/boot' ? '/' : x),
          });
      }
      return {
        type: 'linux',
        distro: release?.distro ?? 'linux',
        product: release?.product ?? null,
        major: release?.major ?? null,
        minor: release?.minor ?? null,
        hostname,
        root: c.partition,
        ...(c.volume ? { rootVolume: c.volume } : {}),
        kernels,
      };
    } catch (e) {
      warnings.push(`the Linux root on ${c.key} could not be read: ${(e as Error).message}`);
    }
  }
  for (const p of parts.filter((x) => x.filesystem === 'ntfs')) {
    const view = partitionView(
      disk,
      entries.find((e) => e.number === p.number)!,
    );
    if (!view) continue;
    try {
      const ntfs = await NtfsReader.open(view);
      // NTFS keeps its label in the $Volume file, not in the boot sector the probe reads.
      if (ntfs.info.label) p.label = ntfs.info.label;
      const win = await windowsRelease(ntfs);
      if (!win) continue;
      if (win.virtioDrivers.length === 0)
        warnings.push(
          `the Windows guest on partition ${p.number} has no virtio drivers installed: it gets SATA disks and an e1000 NIC, which are slower`,
        );
      return {
        type: 'windows',
        distro: 'windows',
        product: win.product,
        major: win.major,
        minor: win.minor,
        hostname: win.hostname,
        root: p.number,
        kernels: [],
        build: win.build,
        installationType: win.installationType,
        virtioDrivers: win.virtioDrivers,
      };
    } catch (e) {
      warnings.push(`partition ${p.number} (NTFS) could not be read for a Windows guest: ${(e as Error).message}`);
    }
  }
  return NO_OS;
}

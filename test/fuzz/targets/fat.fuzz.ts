import { FatReader, parseFatBootSector } from '../../../src/inspect/fat-reader.js';
import { probeFilesystem } from '../../../src/inspect/filesystem-probe.js';
import type { ByteReader } from '../../../src/inspect/byte-reader.js';
import { fatImages } from '../fuzz-fixtures.js';
import { diskTarget } from './disk-target.js';

/** FAT12/16/32 as the inspector reads an ESP: probe, open, list /EFI and its folders, read a loader. */
async function exercise(r: ByteReader): Promise<void> {
  if (r.size >= 512) parseFatBootSector(await r.read(0, 512));
  await probeFilesystem(r);
  const fat = await FatReader.open(r);
  for (const dir of (await fat.listDir('/EFI')) ?? []) {
    if (dir.type === 'dir') await fat.listDir(`/EFI/${dir.name}`);
  }
  await fat.listDir('/many');
  await fat.listDir('/');
  await fat.readFile('/EFI/BOOT/BOOTX64.EFI');
  await fat.readFile('/EFI/A Long File Name For Testing.txt');
}

export const fatTarget = diskTarget('fat', fatImages, exercise, { partition: true });

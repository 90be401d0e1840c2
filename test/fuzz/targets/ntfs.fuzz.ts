import { NtfsReader } from '../../../src/inspect/ntfs-reader.js';
import { probeFilesystem } from '../../../src/inspect/filesystem-probe.js';
import { windowsRelease } from '../../../src/inspect/windows-release.js';
import type { ByteReader } from '../../../src/inspect/byte-reader.js';
import { ntfsImages } from '../fuzz-fixtures.js';
import { diskTarget } from './disk-target.js';

/** NTFS as the inspector reads a Windows volume: probe, open (MFT, $Volume, root index), list, then the hives. */
async function exercise(r: ByteReader): Promise<void> {
  await probeFilesystem(r);
  const ntfs = await NtfsReader.open(r);
  await ntfs.listDir('/');
  await ntfs.listDir('/Users/Public');
  await windowsRelease(ntfs);
}

export const ntfsTarget = diskTarget('ntfs', ntfsImages, exercise, { partition: true });

import { Ext4Reader, parseExt4Superblock } from '../../../src/inspect/ext4-reader.js';
import { probeFilesystem } from '../../../src/inspect/filesystem-probe.js';
import { linuxHostname, linuxKernels, linuxRelease, looksLikeLinuxRoot } from '../../../src/inspect/linux-release.js';
import type { ByteReader } from '../../../src/inspect/byte-reader.js';
import { ext4Images } from '../fuzz-fixtures.js';
import { diskTarget } from './disk-target.js';

/** ext2/3/4 as the inspector reads a Linux root: probe, open, list, read the release files, follow symlinks. */
async function exercise(r: ByteReader): Promise<void> {
  if (r.size >= 2048) parseExt4Superblock(await r.read(1024, 1024));
  await probeFilesystem(r);
  const fs = await Ext4Reader.open(r);
  await fs.listDir('/');
  await fs.listDir('/etc/many');
  await fs.stat('/etc/long-link');
  await fs.readFile('/etc/long-link');
  await fs.readFile('/var/big.bin');
  if (await looksLikeLinuxRoot(fs)) {
    await linuxRelease(fs);
    await linuxHostname(fs);
    await linuxKernels(fs);
  }
}

export const ext4Target = diskTarget('ext4', ext4Images, exercise, { partition: true });

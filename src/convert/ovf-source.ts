import { open, readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { parseOvf, type OvfVirtualSystem } from './ovf-descriptor.js';
import { listTarMembers } from './ova-archive.js';

/** One disk of an OVF/OVA: a file beside the descriptor, or a byte range of the OVA read in place. */
export interface OvfSourceDisk {
  href: string;
  file: string;
  member?: { offset: number; size: number };
}

export interface OvfSource {
  system: OvfVirtualSystem;
  disks: OvfSourceDisk[];
}

/** Descriptors larger than this are not OVF (ovftool's are a few KiB). */
const MAX_DESCRIPTOR = 4 * 1024 * 1024;

/**
 * Reads an OVA (a tar holding an .ovf descriptor and its disks) or an .ovf beside its disk
 * files: the VM's vCPUs, memory, firmware and disks. Null for any other source. Disk names
 * come from the descriptor, so one that reaches outside the package is refused.
 */
export async function readOvfSource(path: string): Promise<OvfSource | null> {
  const ext = extname(path).toLowerCase();
  if (ext === '.ovf') {
    const system = parseOvf(await readFile(path, 'utf8'));
    const disks: OvfSourceDisk[] = [];
    for (const d of system.disks) disks.push({ href: d.href, file: await fileInFolder(path, safeName(d.href)) });
    return { system, disks };
  }
  if (ext !== '.ova') return null;
  const members = await listTarMembers(path);
  const descriptor = members.find((m) => m.name.toLowerCase().endsWith('.ovf'));
  if (!descriptor) throw new MamoriError('IMAGE_CORRUPT', `${path} holds no .ovf descriptor: it is not an OVA`);
  if (descriptor.size > MAX_DESCRIPTOR)
    throw new MamoriError(
      'IMAGE_CORRUPT',
      `the descriptor ${descriptor.name} in ${path} is ${descriptor.size} bytes: not an OVF`,
    );
  const buf = Buffer.alloc(descriptor.size);
  const fh = await open(path, 'r');
  try {
    await fh.read(buf, 0, descriptor.size, descriptor.offset);
  } finally {
    await fh.close();
  }
  const system = parseOvf(buf.toString('utf8'));
  const disks = system.disks.map((d) => {
    const name = safeName(d.href);
    const m = members.find((x) => x.name === name || basename(x.name) === name);
    if (!m)
      throw new MamoriError('IMAGE_CORRUPT', `${path} names the disk ${name} in its descriptor but does not hold it`, {
        details: { href: d.href },
      });
    return { href: d.href, file: path, member: { offset: m.offset, size: m.size } };
  });
  return { system, disks };
}

/** A descriptor's file reference must be a plain name: no folders, no way out of the package. */
function safeName(href: string): string {
  if (!/^[^/\\:]+$/.test(href) || href === '.' || href === '..') {
    throw new MamoriError(
      'IMAGE_UNSAFE_REFERENCE',
      `the OVF descriptor names the disk file ${JSON.stringify(href)}, which is not a plain file name; mamori reads only files inside the package: export the VM again, or put the disks beside the .ovf and name them plainly`,
      { details: { href } },
    );
  }
  return href;
}

/**
 * A disk beside an .ovf: the plain name must also resolve (symlinks followed) to a regular
 * file in the descriptor's own folder, not a link to some other file of this host.
 */
async function fileInFolder(ovf: string, name: string): Promise<string> {
  const file = join(dirname(ovf), name);
  let real: string;
  try {
    real = await realpath(file);
  } catch (cause) {
    throw new MamoriError(
      'IMAGE_NOT_FOUND',
      `the OVF descriptor names the disk file ${name}, which is not beside it in ${dirname(ovf)}: copy the whole package`,
      { cause, details: { href: name } },
    );
  }
  if (dirname(real) !== (await realpath(dirname(ovf))) || !(await stat(real)).isFile()) {
    throw new MamoriError(
      'IMAGE_UNSAFE_REFERENCE',
      `the OVF descriptor's disk ${name} is a link to ${real}, outside the package's folder (or not a regular file); copy the disk file itself beside the .ovf`,
      { details: { href: name, target: real } },
    );
  }
  return file;
}

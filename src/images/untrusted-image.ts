import { open, realpath, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { runProcess } from '../core/run-process.js';
import type { UntrustedImageSpec } from '../qemu/qemu-img-read.js';
import { fileImageBytes } from './image-bytes.js';
import {
  UNTRUSTED_FORMATS,
  printable,
  probeImageFormat,
  readImageReferences,
  type ImageReference,
  type UntrustedFormat,
} from './image-references.js';

/** An image that came from outside the site: a path on this host, or a byte range of one (a VMDK inside an OVA). */
export interface UntrustedSource {
  file: string;
  member?: { offset: number; size: number };
  /** qemu-img's name, when the person gave one; otherwise mamori decides from the header. */
  format?: string;
}

export interface VettedImage extends UntrustedImageSpec {
  format: UntrustedFormat;
  /** A split VMDK's extent files (real paths, each a regular file in the descriptor's own folder). */
  extents: string[];
}

/**
 * The one door for images from outside the site (imports, inspections, conversions, OVF/OVA
 * disks). mamori reads the headers itself, with bounded reads, before QEMU opens anything:
 * the format is decided here (or given) and pinned, and every file the image names is refused
 * (backing files, external data files, parents) except a split VMDK's extents that are plain
 * regular files in the descriptor's own folder. Hand the result to the untrusted* functions of
 * src/qemu/qemu-img-read.ts and qemu-img-write.ts (or untrustedImageName for qemu-nbd), which also
 * cut backing files.
 */
export async function vetUntrustedImage(source: UntrustedSource): Promise<VettedImage> {
  const where = source.member ? `${source.file} (the member at byte ${source.member.offset})` : source.file;
  const st = await stat(source.file).catch((cause: unknown) => {
    throw new MamoriError('IMAGE_NOT_FOUND', `no image at ${source.file}: check the path`, {
      cause,
      details: { source: source.file },
    });
  });
  const blockDevice = st.isBlockDevice();
  if (!st.isFile() && !blockDevice)
    throw new MamoriError('IMAGE_UNREADABLE', `${source.file} is neither an image file nor a block device`, {
      details: { source: source.file },
    });
  const fh = await open(source.file, 'r').catch((cause: unknown) => {
    throw new MamoriError('IMAGE_NOT_FOUND', `${source.file} is not readable by the site server`, {
      cause,
      details: { source: source.file },
    });
  });
  let format: UntrustedFormat;
  let refs: ImageReference[];
  try {
    const size = blockDevice ? await deviceSize(source.file) : st.size;
    const bytes = fileImageBytes(fh, size, where, source.member);
    const named = source.format ?? (await probeImageFormat(bytes));
    if (!(UNTRUSTED_FORMATS as readonly string[]).includes(named)) {
      throw new MamoriError(
        'IMAGE_FORMAT_UNSUPPORTED',
        `${where} is a ${named} image; mamori reads qcow2, raw, vmdk, vhd (vpc) and vhdx. Convert it to qcow2 where it came from (qemu-img convert -O qcow2)`,
        { details: { source: source.file, format: named } },
      );
    }
    format = named as UntrustedFormat;
    refs = await readImageReferences(bytes, format);
  } finally {
    await fh.close();
  }
  const extents: string[] = [];
  for (const ref of refs) {
    if (ref.kind !== 'extent') throw unsafe(where, ref, advice(ref));
    if (source.member)
      throw unsafe(
        where,
        ref,
        'a VMDK inside an OVA must be one self-contained file (streamOptimized or monolithicSparse); export the VM again as an OVA',
      );
    extents.push(await checkExtent(source.file, where, ref));
  }
  return {
    file: source.file,
    format,
    extents,
    ...(source.member ? { member: source.member } : {}),
    ...(blockDevice ? { blockDevice } : {}),
  };
}

/**
 * A split VMDK's extent is opened by QEMU relative to the descriptor, so it must be a plain
 * name (no folder, no `..`, no protocol prefix like `nbd:`), resolve (symlinks followed) to a
 * regular file in the descriptor's own folder.
 */
async function checkExtent(descriptor: string, where: string, ref: ImageReference): Promise<string> {
  const plain = ref.name !== '' && ref.name !== '.' && ref.name !== '..' && !/[/\\:\0]/.test(ref.name);
  if (!plain)
    throw unsafe(
      where,
      ref,
      "a split VMDK's extents must be plain file names beside the descriptor; put the files in one folder and name them without paths, or convert it to one file with qemu-img convert -O vmdk -o subformat=monolithicSparse where it came from",
    );
  const folder = await realpath(dirname(descriptor));
  let real: string;
  try {
    real = await realpath(join(dirname(descriptor), ref.name));
  } catch (cause) {
    throw new MamoriError(
      'IMAGE_CORRUPT',
      `${where} names the extent file ${printable(ref.name)} (${ref.where}), which is missing beside it: copy all of the VMDK's files into one folder`,
      { cause, details: { source: descriptor, extent: ref.name } },
    );
  }
  if (dirname(real) !== folder)
    throw unsafe(
      where,
      ref,
      `the extent is a link to ${real}, outside the descriptor's folder ${folder}; copy the file itself into that folder`,
    );
  if (!(await stat(real)).isFile())
    throw unsafe(where, ref, 'the extent is not a regular file; copy the extent file itself beside the descriptor');
  return real;
}

function advice(ref: ImageReference): string {
  switch (ref.kind) {
    case 'backing-file':
      return 'flatten it where it came from with qemu-img convert -O qcow2 IMAGE flat.qcow2 (which copies its backing chain into one self-contained file) and import that';
    case 'data-file':
      return 'its data lives in another file: make one self-contained image where it came from with qemu-img convert -O qcow2 IMAGE flat.qcow2 and import that';
    default:
      return 'it is a differencing (delta) disk: merge it into its parent where it came from (consolidate the snapshots, or qemu-img convert the whole chain into one image) and import that';
  }
}

function unsafe(where: string, ref: ImageReference, todo: string): MamoriError {
  const what = {
    'backing-file': 'backing file',
    'data-file': 'external data file',
    extent: 'extent file',
    parent: 'parent disk',
  }[ref.kind];
  const named = ref.name === '' ? `a ${what}` : `the ${what} ${printable(ref.name)}`;
  return new MamoriError(
    'IMAGE_UNSAFE_REFERENCE',
    `${where} names ${named} (${ref.where}); mamori refuses to let QEMU read another file of this host for an image from outside the site: ${todo}`,
    {
      details: { source: where, reference: ref.kind, name: ref.name, where: ref.where },
    },
  );
}

async function deviceSize(device: string): Promise<number> {
  const { stdout } = await runProcess('blockdev', ['--getsize64', device], { timeoutMs: 10_000 });
  return Number(stdout.trim());
}

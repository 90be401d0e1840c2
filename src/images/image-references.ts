import { MamoriError } from '../core/mamori-error.js';
import type { ImageBytes } from './image-bytes.js';
import { qcow2References } from './qcow2-references.js';
import { vmdkReferences } from './vmdk-references.js';
import { vhdxReferences } from './vhdx-references.js';
import { vpcReferences } from './vpc-references.js';

export type { ImageReference } from './image-reference.js';
import type { ImageReference } from './image-reference.js';

/** qemu-img's names of the formats whose headers mamori reads; only these are opened from outside. */
export const UNTRUSTED_FORMATS = ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx'] as const;
export type UntrustedFormat = (typeof UNTRUSTED_FORMATS)[number];

/**
 * The format by its magic, as mamori reads it (QEMU never probes an outside image). Formats
 * QEMU knows but mamori does not read references of are named, so callers can refuse them
 * by name. A fixed VHD (footer only at the end) reads as raw, as QEMU's own probe says.
 */
export async function probeImageFormat(
  bytes: ImageBytes,
): Promise<UntrustedFormat | 'qcow' | 'qed' | 'vdi' | 'luks' | 'parallels' | 'vmdk3'> {
  const head = await bytes.read(0, 512);
  const at = (off: number, text: string): boolean => head.subarray(off, off + text.length).toString('latin1') === text;
  if (at(0, 'QFI\xfb')) return head.length >= 8 && head.readUInt32BE(4) === 1 ? 'qcow' : 'qcow2';
  if (at(0, 'KDMV')) return 'vmdk';
  if (at(0, 'COWD')) return 'vmdk3';
  if (at(0, 'vhdxfile')) return 'vhdx';
  if (at(0, 'conectix')) return 'vpc';
  if (at(0, 'QED\0')) return 'qed';
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return 'vdi';
  if (at(0, 'LUKS\xba\xbe')) return 'luks';
  if (at(0, 'WithoutFreeSpace') || at(0, 'WithouFreSpacExt')) return 'parallels';
  if (looksLikeVmdkDescriptor(head)) return 'vmdk';
  return 'raw';
}

/** A text descriptor: QEMU's vmdk probe accepts one whose first non-comment line is `version=N`. */
function looksLikeVmdkDescriptor(head: Buffer): boolean {
  const text = head.toString('latin1');
  if (text.startsWith('# Disk DescriptorFile')) return true;
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) continue;
    return /^version\s*=\s*[123]\b/.test(l);
  }
  return false;
}

/** Every file the image names, read from its headers with `format` pinned (the format QEMU will be told). */
export async function readImageReferences(bytes: ImageBytes, format: UntrustedFormat): Promise<ImageReference[]> {
  switch (format) {
    case 'raw':
      return [];
    case 'qcow2':
      return qcow2References(bytes);
    case 'vmdk':
      return vmdkReferences(bytes);
    case 'vhdx':
      return vhdxReferences(bytes);
    case 'vpc':
      return vpcReferences(bytes);
    default:
      throw new MamoriError('IMAGE_FORMAT_UNSUPPORTED', `format ${String(format)} is not one mamori reads`);
  }
}

/** Strings found in headers, printable in a message whatever bytes they hold. */
export function printable(name: string): string {
  return JSON.stringify(name.length > 300 ? `${name.slice(0, 300)}...` : name);
}

import type { ImageBytes } from './image-bytes.js';
import { corruptImage, readExact } from './image-bytes.js';
import type { ImageReference } from './image-reference.js';
import { MamoriError } from '../core/mamori-error.js';

/** QEMU reads at most this much of a text descriptor (block/vmdk.c, vmdk_read_desc). */
const MAX_DESCRIPTOR = (1 << 20) - 1;
const GD_AT_END = 0xffffffffffffffffn;
const SECTOR = 512;
/** QEMU's extent access words; it follows RW lines, the others are counted too to be safe. */
const EXTENT_ACCESS = new Set(['RW', 'RDONLY', 'NOACCESS']);

/**
 * The files a VMDK makes QEMU open:
 * - a plain-text descriptor (monolithicFlat, twoGbMaxExtentSparse, vmfs, ...): every extent
 *   line's file, and a delta disk's parent (`parentFileNameHint`, or a `parentCID` other than
 *   ffffffff);
 * - a sparse file (KDMV: monolithicSparse, streamOptimized): its embedded descriptor's parent;
 *   and when its capacity is 0 (header, or the footer of a streamOptimized file), QEMU treats the
 *   embedded descriptor as a descriptor file and opens its extents, so those count too.
 */
export async function vmdkReferences(bytes: ImageBytes): Promise<ImageReference[]> {
  const magic = (await readExact(bytes, 0, 4, 'VMDK magic')).toString('latin1');
  if (magic === 'COWD')
    throw new MamoriError(
      'IMAGE_FORMAT_UNSUPPORTED',
      `${bytes.label} is a VMware 3 (COWD) sparse disk; convert it to a current VMDK with vmware-vdiskmanager where it came from`,
    );
  if (magic !== 'KDMV') {
    const text = await bytes.read(0, Math.min(MAX_DESCRIPTOR, bytes.size));
    return descriptorReferences(bytes, text.toString('latin1'), { extentsAreFiles: true, where: 'descriptor' });
  }
  const header = await readExact(bytes, 0, 512, 'VMDK sparse header');
  const headers = [header];
  if (header.readBigUInt64LE(56) === GD_AT_END) {
    // streamOptimized keeps the real header in a footer 1024 bytes before the end; QEMU reads that one.
    const footer = await readExact(bytes, bytes.size - 1024, 512, 'VMDK footer');
    if (footer.toString('latin1', 0, 4) !== 'KDMV')
      throw corruptImage(bytes, 'its VMDK footer (streamOptimized) is missing');
    headers.push(footer);
  }
  const refs: ImageReference[] = [];
  const seen = new Set<bigint>();
  for (const h of headers) {
    const capacity = h.readBigUInt64LE(12);
    const descSectors = h.readBigUInt64LE(28);
    const descSize = h.readBigUInt64LE(36);
    if (descSectors === 0n || seen.has(descSectors)) continue;
    seen.add(descSectors);
    const offset = Number(descSectors) * SECTOR;
    const length = Math.min(Number(descSize) * SECTOR, MAX_DESCRIPTOR);
    if (!Number.isSafeInteger(offset) || offset + length > bytes.size)
      throw corruptImage(
        bytes,
        `its embedded VMDK descriptor (sector ${descSectors}) lies past the end of the image (truncated?)`,
      );
    const text = (await readExact(bytes, offset, length, 'embedded VMDK descriptor')).toString('latin1');
    refs.push(...descriptorReferences(bytes, text, { extentsAreFiles: capacity === 0n, where: 'embedded descriptor' }));
  }
  return refs;
}

/**
 * Extent lines are parsed as generously as QEMU's sscanf("%10s %ld %10s \"%511[^\n\r\"]\" %ld"):
 * any line whose first word is an access word is an extent, and its file is the first quoted
 * string on the line (a ZERO extent has none). A C string ends at NUL; so does ours.
 */
export function descriptorReferences(
  bytes: ImageBytes,
  raw: string,
  o: { extentsAreFiles: boolean; where: string },
): ImageReference[] {
  const nul = raw.indexOf('\0');
  const text = nul === -1 ? raw : raw.slice(0, nul);
  const refs: ImageReference[] = [];
  let parentCid: string | null = null;
  let parentHint: string | null = null;
  for (const [i, line] of text.split('\n').entries()) {
    const words = line.trim().split(/\s+/);
    if (o.extentsAreFiles && EXTENT_ACCESS.has(words[0] ?? '')) {
      const q = /"([^"\r\n]*)"/.exec(line);
      if (q) refs.push({ kind: 'extent', name: q[1]!, where: `${o.where} line ${i + 1}` });
      else if (line.includes('"'))
        throw corruptImage(bytes, `VMDK ${o.where} line ${i + 1} has an unterminated file name`);
      continue;
    }
    const kv = /^\s*([A-Za-z0-9_.]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (!kv) continue;
    const value = kv[2]!.replace(/^"(.*)"$/, '$1');
    if (kv[1] === 'parentCID') parentCid = value;
    if (kv[1] === 'parentFileNameHint') parentHint = value;
  }
  if (parentHint !== null && parentHint !== '')
    refs.push({ kind: 'parent', name: parentHint, where: `${o.where} parentFileNameHint` });
  else if (parentCid !== null && parentCid.toLowerCase() !== 'ffffffff')
    refs.push({ kind: 'parent', name: '', where: `${o.where} parentCID=${parentCid}` });
  return refs;
}

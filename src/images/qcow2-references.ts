import type { ImageBytes } from './image-bytes.js';
import { corruptImage, readExact } from './image-bytes.js';
import type { ImageReference } from './image-reference.js';

const EXT_END = 0;
const EXT_DATA_FILE = 0x44415441; // "DATA": the external data file's name
const INCOMPAT_DATA_FILE = 1n << 2n;
/** QEMU refuses longer backing file names (block/qcow2.c), so a longer one is damage. */
const MAX_BACKING_NAME = 1023;

/**
 * A qcow2's backing file (header bytes 8..19: offset and length of its name) and external
 * data file (incompatible feature bit 2, and header extension 0x44415441 with its name).
 * Versions 2 and 3. Reads only the first cluster, where QEMU keeps all of these.
 */
export async function qcow2References(bytes: ImageBytes): Promise<ImageReference[]> {
  const h = await readExact(bytes, 0, 72, 'qcow2 header');
  if (h.toString('latin1', 0, 4) !== 'QFI\xfb')
    throw corruptImage(bytes, 'it does not start with the qcow2 magic QFI\\xfb, so it is not a qcow2 image');
  const version = h.readUInt32BE(4);
  if (version !== 2 && version !== 3)
    throw corruptImage(bytes, `its qcow2 header says version ${version}; only versions 2 and 3 exist`);
  const backingOffset = h.readBigUInt64BE(8);
  const backingSize = h.readUInt32BE(16);
  const clusterBits = h.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21)
    throw corruptImage(bytes, `its qcow2 cluster size is 2^${clusterBits} bytes (9 to 21 are valid)`);
  const clusterSize = 2 ** clusterBits;
  const refs: ImageReference[] = [];

  if (backingOffset !== 0n) {
    if (
      backingOffset > BigInt(clusterSize) ||
      backingSize > MAX_BACKING_NAME ||
      Number(backingOffset) + backingSize > clusterSize
    ) {
      throw corruptImage(
        bytes,
        `its backing file name (offset ${backingOffset}, ${backingSize} bytes) lies outside the first cluster`,
      );
    }
    if (backingSize > 0) {
      const name = (await readExact(bytes, Number(backingOffset), backingSize, 'backing file name')).toString('utf8');
      refs.push({ kind: 'backing-file', name, where: 'qcow2 header (backing file)' });
    }
  }

  let incompatible = 0n;
  let extStart = 72;
  if (version === 3) {
    const v3 = await readExact(bytes, 72, 32, 'qcow2 version 3 header');
    incompatible = v3.readBigUInt64BE(0);
    const headerLength = v3.readUInt32BE(100 - 72);
    if (headerLength < 104 || headerLength > clusterSize)
      throw corruptImage(bytes, `its qcow2 header length ${headerLength} is out of range`);
    extStart = headerLength;
  }

  let dataFileName: string | null = null;
  // Extensions follow the header, 8-byte aligned, up to the backing file name or the cluster's end.
  const extEnd = backingOffset !== 0n ? Number(backingOffset) : clusterSize;
  const region = await bytes.read(0, Math.min(extEnd, bytes.size));
  for (let at = extStart; ;) {
    // QEMU stops at the area's end without an end marker too.
    if (at + 8 > extEnd) break;
    if (at + 8 > region.length)
      throw corruptImage(
        bytes,
        `its qcow2 header extensions run past the image's end at byte ${region.length} (truncated?)`,
      );
    const type = region.readUInt32BE(at);
    const len = region.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    if (at + 8 + len > region.length)
      throw corruptImage(
        bytes,
        `its qcow2 header extension 0x${type.toString(16)} at byte ${at} runs past the first cluster`,
      );
    if (type === EXT_DATA_FILE) dataFileName = region.toString('utf8', at + 8, at + 8 + len);
    at += 8 + Math.ceil(len / 8) * 8;
  }
  if ((incompatible & INCOMPAT_DATA_FILE) !== 0n || dataFileName !== null) {
    refs.push({
      kind: 'data-file',
      name: dataFileName ?? '',
      where: 'qcow2 external data file (incompatible feature bit 2, extension 0x44415441)',
    });
  }
  return refs;
}

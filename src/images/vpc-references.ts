import type { ImageBytes } from './image-bytes.js';
import { corruptImage, readExact } from './image-bytes.js';
import type { ImageReference } from './image-reference.js';

const DIFFERENCING = 4;
const KNOWN_TYPES = new Set([2, 3, 4]); // fixed, dynamic, differencing
const LOCATORS = 8;

/**
 * A VHD ("vpc") differencing disk's parent: disk type 4 in the footer (a copy at byte 0 for
 * dynamic disks, the footer proper in the last 512 bytes), then the dynamic header's "parent
 * unicode name" and its parent locator entries (W2ru/W2ku UTF-16LE paths, Mac/MacX UTF-8).
 */
export async function vpcReferences(bytes: ImageBytes): Promise<ImageReference[]> {
  const footer = await findFooter(bytes);
  const diskType = footer.readUInt32BE(60);
  if (!KNOWN_TYPES.has(diskType))
    throw corruptImage(bytes, `its VHD footer says disk type ${diskType} (2, 3 or 4 are valid)`);
  if (diskType !== DIFFERENCING) return [];
  const headerAt = footer.readBigUInt64BE(16);
  const refs: ImageReference[] = [];
  const header = headerAt + 1024n <= BigInt(bytes.size) ? await bytes.read(Number(headerAt), 1024) : Buffer.alloc(0);
  if (header.length === 1024 && header.toString('latin1', 0, 8) === 'cxsparse') {
    const name = utf16be(header.subarray(64, 64 + 512)).replace(/\0+$/, '');
    if (name !== '') refs.push({ kind: 'parent', name, where: 'VHD parent unicode name' });
    for (let i = 0; i < LOCATORS; i++) {
      const e = header.subarray(576 + i * 24, 576 + i * 24 + 24);
      const code = e.toString('latin1', 0, 4);
      const length = Math.min(e.readUInt32BE(8), 4096);
      const offset = e.readBigUInt64BE(16);
      if (code === '\0\0\0\0' || length === 0) continue;
      const data = await readExact(bytes, Number(offset), length, `VHD parent locator ${code}`);
      const path = (code === 'W2ru' || code === 'W2ku' ? data.toString('utf16le') : data.toString('utf8')).replace(
        /\0+$/,
        '',
      );
      if (path !== '') refs.push({ kind: 'parent', name: path, where: `VHD parent locator ${code}` });
    }
  }
  return refs.length > 0 ? refs : [{ kind: 'parent', name: '', where: 'VHD footer (differencing disk)' }];
}

/** QEMU reads the copy at byte 0 when it is there, else the footer at the end. */
async function findFooter(bytes: ImageBytes): Promise<Buffer> {
  const head = await readExact(bytes, 0, 512, 'VHD footer');
  if (head.toString('latin1', 0, 8) === 'conectix') return head;
  for (const back of [512, 511]) {
    if (bytes.size < back) continue;
    const tail = await bytes.read(bytes.size - back, 512);
    if (tail.toString('latin1', 0, 8) === 'conectix') return Buffer.concat([tail, Buffer.alloc(512 - tail.length)]);
  }
  throw corruptImage(bytes, 'it has no VHD footer ("conectix") at its start or end, so it is not a VHD image');
}

function utf16be(b: Buffer): string {
  const swapped = Buffer.from(b.subarray(0, b.length - (b.length % 2)));
  swapped.swap16();
  return swapped.toString('utf16le');
}

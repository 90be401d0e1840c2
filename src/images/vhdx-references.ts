import type { ImageBytes } from './image-bytes.js';
import { corruptImage, readExact } from './image-bytes.js';
import type { ImageReference } from './image-reference.js';

const KiB = 1024;
/** The two copies of the region table (MS-VHDX 2.2.3); QEMU uses the first valid one. */
const REGION_TABLES = [192 * KiB, 256 * KiB];
const METADATA_REGION = guid('8B7CA206-4790-4B9A-B8FE-575F050F886E');
const FILE_PARAMETERS = guid('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
const PARENT_LOCATOR = guid('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C');
const HAS_PARENT = 0x2;
/** Region and metadata tables hold at most 2047 entries of 32 bytes after a 16/32-byte header (64 KiB). */
const MAX_ENTRIES = 2047;
const PATH_KEYS = ['relative_path', 'volume_path', 'absolute_win32_path'];

/** A GUID as VHDX stores it: the first three fields little-endian, the rest as written. */
export function guid(text: string): Buffer {
  const hex = text.replace(/-/g, '');
  const b = Buffer.from(hex, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/**
 * A VHDX differencing disk's parent: the file parameters' has_parent bit and the metadata
 * region's Parent Locator (parent_linkage and the paths: relative_path, volume_path,
 * absolute_win32_path). Each path found is one reference; a parent with none readable is one
 * reference without a name. (QEMU 7.2 itself refuses VHDX parents; mamori says why first.)
 */
export async function vhdxReferences(bytes: ImageBytes): Promise<ImageReference[]> {
  const sig = (await readExact(bytes, 0, 8, 'VHDX file identifier')).toString('latin1');
  if (sig !== 'vhdxfile') throw corruptImage(bytes, 'it does not start with "vhdxfile", so it is not a VHDX image');
  const metadata = await metadataRegion(bytes);
  const table = await readExact(bytes, metadata.offset, 32, 'VHDX metadata table header');
  if (table.toString('latin1', 0, 8) !== 'metadata')
    throw corruptImage(bytes, `its VHDX metadata table at byte ${metadata.offset} has no "metadata" signature`);
  const count = table.readUInt16LE(10);
  if (count > MAX_ENTRIES) throw corruptImage(bytes, `its VHDX metadata table claims ${count} entries`);
  const entries = await readExact(bytes, metadata.offset + 32, count * 32, 'VHDX metadata table');
  let hasParent = false;
  let locator: { offset: number; length: number } | null = null;
  for (let i = 0; i < count; i++) {
    const e = entries.subarray(i * 32, i * 32 + 32);
    const item = { offset: e.readUInt32LE(16), length: e.readUInt32LE(20) };
    if (item.offset + item.length > metadata.length)
      throw corruptImage(bytes, `a VHDX metadata item lies outside its region`);
    if (e.subarray(0, 16).equals(FILE_PARAMETERS)) {
      const p = await readExact(bytes, metadata.offset + item.offset, 8, 'VHDX file parameters');
      hasParent = (p.readUInt32LE(4) & HAS_PARENT) !== 0;
    } else if (e.subarray(0, 16).equals(PARENT_LOCATOR)) {
      locator = item;
    }
  }
  if (!hasParent && locator === null) return [];
  const paths =
    locator === null
      ? []
      : await locatorPaths(bytes, metadata.offset + locator.offset, Math.min(locator.length, 64 * KiB));
  if (paths.length === 0) return [{ kind: 'parent', name: '', where: 'VHDX file parameters (has_parent)' }];
  return paths.map((p) => ({ kind: 'parent', name: p.value, where: `VHDX parent locator ${p.key}` }));
}

async function metadataRegion(bytes: ImageBytes): Promise<{ offset: number; length: number }> {
  for (const at of REGION_TABLES) {
    const head = await readExact(bytes, at, 16, 'VHDX region table');
    if (head.toString('latin1', 0, 4) !== 'regi') continue;
    const count = head.readUInt32LE(8);
    if (count > MAX_ENTRIES) continue;
    const entries = await readExact(bytes, at + 16, count * 32, 'VHDX region table');
    for (let i = 0; i < count; i++) {
      const e = entries.subarray(i * 32, i * 32 + 32);
      if (!e.subarray(0, 16).equals(METADATA_REGION)) continue;
      const offset = Number(e.readBigUInt64LE(16));
      return { offset, length: e.readUInt32LE(24) };
    }
  }
  throw corruptImage(bytes, 'its VHDX region tables (at 192 and 256 KiB) name no metadata region');
}

/** The locator's key/value pairs (UTF-16LE, offsets from the locator's start); only the path keys are kept. */
async function locatorPaths(
  bytes: ImageBytes,
  start: number,
  length: number,
): Promise<{ key: string; value: string }[]> {
  const loc = await readExact(bytes, start, length, 'VHDX parent locator');
  if (loc.length < 20) return [];
  const count = loc.readUInt16LE(18);
  const out: { key: string; value: string }[] = [];
  for (let i = 0; i < count && 20 + i * 12 + 12 <= loc.length; i++) {
    const e = 20 + i * 12;
    const kOff = loc.readUInt32LE(e);
    const vOff = loc.readUInt32LE(e + 4);
    const kLen = loc.readUInt16LE(e + 8);
    const vLen = loc.readUInt16LE(e + 10);
    if (kOff + kLen > loc.length || vOff + vLen > loc.length)
      throw corruptImage(bytes, 'a VHDX parent locator entry lies outside the locator');
    const key = loc.toString('utf16le', kOff, kOff + kLen);
    if (PATH_KEYS.includes(key)) out.push({ key, value: loc.toString('utf16le', vOff, vOff + vLen) });
  }
  return out;
}

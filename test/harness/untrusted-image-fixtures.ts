import { mkdir, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../src/core/run-process.js';
import { guid } from '../../src/images/vhdx-references.js';

/**
 * Hostile images built at test time with qemu-img (and, where qemu-img cannot make them, by
 * patching the bytes of one it made): each names a host file holding MARKER, so a test can
 * prove none of those bytes reached the site.
 */
export const MARKER = 'MAMORI-HOST-SECRET-7f3a9c';
const MiB = 1024 * 1024;

async function qemuImg(...args: string[]): Promise<void> {
  await runProcess('qemu-img', args, { timeoutMs: 60_000 });
}

async function patch(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** A 1 MiB host file full of the marker: what a hostile image tries to make the site read. */
export async function markerFile(path: string): Promise<string> {
  const text = Buffer.from(MARKER);
  const buf = Buffer.alloc(MiB);
  for (let at = 0; at + text.length <= buf.length; at += text.length) text.copy(buf, at);
  await writeFile(path, buf);
  return path;
}

/** True when any file under `root` (recursively) holds the marker. */
export async function markerUnder(root: string): Promise<string[]> {
  const hits: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && (await stat(p)).size < 256 * MiB && (await readFile(p)).includes(MARKER)) hits.push(p);
    }
  };
  await walk(root);
  return hits;
}

export async function qcow2WithBacking(path: string, backing: string): Promise<string> {
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'raw', path, '1M');
  return path;
}

/** The backing named as a `json:` description of the host file (qemu-img rebase -u writes it unopened). */
export async function qcow2WithJsonBacking(path: string, hostFile: string): Promise<string> {
  await qemuImg('create', '-q', '-f', 'qcow2', path, '1M');
  await qemuImg(
    'rebase',
    '-u',
    '-f',
    'qcow2',
    '-F',
    'raw',
    '-b',
    `json:${JSON.stringify({ driver: 'raw', file: { driver: 'file', filename: hostFile } })}`,
    path,
  );
  return path;
}

/** qcow2 with an external raw data file; the marker is written into the data file after creation (create truncates it). */
export async function qcow2WithDataFile(path: string, dataFile: string): Promise<string> {
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${dataFile},data_file_raw=on`, path, '1M');
  await markerFile(dataFile);
  return path;
}

/** A monolithicFlat descriptor whose FLAT extent is `extent` (absolute, or relative like ../x). */
export async function vmdkWithFlatExtent(path: string, extent: string): Promise<string> {
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', path, '1M');
  const text = await readFile(path, 'utf8');
  await writeFile(path, text.replace(/^RW 2048 FLAT "[^"]*" 0$/m, `RW 2048 FLAT "${extent}" 0`));
  return path;
}

/**
 * A VHDX differencing disk: qemu-img cannot make one, so a dynamic VHDX it made gets the file
 * parameters' has_parent bit and a Parent Locator metadata item naming `parent`.
 */
export async function vhdxWithParent(path: string, parent: string): Promise<string> {
  await qemuImg('create', '-q', '-f', 'vhdx', path, '4M');
  const img = await readFile(path);
  const region = regionOf(img, guid('8B7CA206-4790-4B9A-B8FE-575F050F886E'));
  const count = img.readUInt16LE(region.offset + 10);
  let end = 0;
  for (let i = 0; i < count; i++) {
    const e = region.offset + 32 + i * 32;
    end = Math.max(end, img.readUInt32LE(e + 16) + img.readUInt32LE(e + 20));
    if (img.subarray(e, e + 16).equals(guid('CAA16737-FA36-4D43-B3B6-33F0AA44E76B'))) {
      const at = region.offset + img.readUInt32LE(e + 16) + 4;
      await patch(path, at, u32(img.readUInt32LE(at) | 0x2));
    }
  }
  const kv: [string, string][] = [
    ['parent_linkage', '{83ce2dd8-0a45-4b8c-a5f4-dd8dfb0ba8e1}'],
    ['relative_path', parent],
    ['absolute_win32_path', `C:\\${parent}`],
  ];
  const header = Buffer.alloc(20 + kv.length * 12);
  guid('B04AEFB7-D19E-4A81-B789-25B8E9445913').copy(header, 0);
  header.writeUInt16LE(kv.length, 18);
  const strings: Buffer[] = [];
  let at = header.length;
  kv.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le');
    const vb = Buffer.from(v, 'utf16le');
    header.writeUInt32LE(at, 20 + i * 12);
    header.writeUInt32LE(at + kb.length, 20 + i * 12 + 4);
    header.writeUInt16LE(kb.length, 20 + i * 12 + 8);
    header.writeUInt16LE(vb.length, 20 + i * 12 + 10);
    strings.push(kb, vb);
    at += kb.length + vb.length;
  });
  const locator = Buffer.concat([header, ...strings]);
  const itemOffset = Math.ceil(end / 4096) * 4096;
  const entry = Buffer.alloc(32);
  guid('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C').copy(entry, 0);
  entry.writeUInt32LE(itemOffset, 16);
  entry.writeUInt32LE(locator.length, 20);
  entry.writeUInt32LE(0x4, 24); // is_required
  await patch(path, region.offset + 32 + count * 32, entry);
  await patch(path, region.offset + 10, Buffer.from([(count + 1) & 0xff, (count + 1) >> 8]));
  await patch(path, region.offset + itemOffset, locator);
  return path;
}

function regionOf(img: Buffer, id: Buffer): { offset: number; length: number } {
  const at = 192 * 1024;
  const count = img.readUInt32LE(at + 8);
  for (let i = 0; i < count; i++) {
    const e = at + 16 + i * 32;
    if (img.subarray(e, e + 16).equals(id))
      return { offset: Number(img.readBigUInt64LE(e + 16)), length: img.readUInt32LE(e + 24) };
  }
  throw new Error('no such VHDX region');
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

/** A VHD differencing disk: a dynamic VHD qemu-img made, turned into type 4 with a parent name and a W2ku locator. */
export async function vpcDifferencing(path: string, parent: string): Promise<string> {
  await qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', path, '4M');
  const size = (await stat(path)).size;
  const type = Buffer.alloc(4);
  type.writeUInt32BE(4);
  await patch(path, 60, type);
  await patch(path, size - 512 + 60, type);
  const head = await readFile(path);
  const dyn = Number(head.readBigUInt64BE(16));
  const name = Buffer.from(parent, 'utf16le').swap16();
  await patch(path, dyn + 64, name);
  const data = Buffer.from(`C:\\${parent}`, 'utf16le');
  const loc = Buffer.alloc(24);
  loc.write('W2ku', 0, 'latin1');
  loc.writeUInt32BE(512, 4);
  loc.writeUInt32BE(data.length, 8);
  loc.writeBigUInt64BE(BigInt(dyn + 768), 16);
  await patch(path, dyn + 576, loc);
  await patch(path, dyn + 768, data);
  return path;
}

/** A folder holding a split VMDK (twoGbMaxExtentSparse) with `data` at its start. */
export async function splitVmdk(folder: string, name: string, data?: Buffer): Promise<string> {
  await mkdir(folder, { recursive: true });
  const path = join(folder, name);
  if (data) {
    const raw = join(folder, `${name}.src.raw`);
    await writeFile(raw, data);
    await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', raw, path);
    await rm(raw);
  } else {
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', path, '4M');
  }
  return path;
}

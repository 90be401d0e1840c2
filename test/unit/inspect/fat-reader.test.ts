import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bufferReader, sliceReader, type ByteReader } from '../../../src/inspect/byte-reader.js';
import { FatReader, parseFatBootSector } from '../../../src/inspect/fat-reader.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

// Real images made by dosfstools and populated with mtools, one per FAT type, all holding the same tree.

type FatType = 'fat12' | 'fat16' | 'fat32';

const KiB = 1024;
const IMAGE_KIB: Record<FatType, number> = { fat12: 1440, fat16: 16 * KiB, fat32: 36 * KiB };
const LONG_NAME = 'A Long File Name With Spaces.txt';
const UNICODE_NAME = 'Ünïcödé ファイル.txt';
const MANY_COUNT = 300;
const BAD_CLUSTER: Record<FatType, number> = { fat12: 0xff7, fat16: 0xfff7, fat32: 0x0ffffff7 };

let workDir = '';
const images = new Map<FatType, Buffer>();
let offsetDisk = Buffer.alloc(0);
const OFFSET_SECTORS = 2048;
const OFFSET_FS_KIB = 20 * KiB;

/** Deterministic bytes that do not repeat at any power-of-two period, so swapped clusters show. */
function knownBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state >>> 24;
  }
  return out;
}

const BOOT_EFI = Buffer.concat([Buffer.from('MZ'), knownBytes(100 * KiB - 2, 1)]);
const GRUB_EFI = knownBytes(300 * KiB, 2);
const NESTED = knownBytes(777, 3);

function run(command: string, args: string[]): void {
  execFileSync(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    // C.UTF-8 so mtools takes the Unicode file name from its argument as UTF-8.
    env: { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8' },
  });
}

function localFile(name: string, content: Buffer | string): string {
  const path = join(workDir, 'src', name);
  writeFileSync(path, content);
  return path;
}

/** The same tree on every image; `target` is what mtools' -i takes (image path, maybe with @@offset). */
function populate(target: string): void {
  run('mmd', [
    '-i',
    target,
    '::/EFI',
    '::/EFI/BOOT',
    '::/EFI/debian',
    '::/EFI/debian/fw',
    '::/EFI/debian/fw/deep',
    '::/many',
  ]);
  // Created first and deleted last, so deleted entries sit between live ones.
  run('mcopy', [
    '-i',
    target,
    localFile('Deleted Long Name.txt', 'gone'),
    localFile('GONE.TXT', 'gone'),
    '::/EFI/debian/',
  ]);
  run('mcopy', ['-i', target, localFile('BOOTX64.EFI', BOOT_EFI), '::/EFI/BOOT/BOOTX64.EFI']);
  run('mcopy', [
    '-i',
    target,
    localFile('grubx64.efi', GRUB_EFI),
    localFile(LONG_NAME, 'long name\n'),
    localFile('empty.txt', ''),
    localFile('Shim.Efi', 'mixed case\n'),
    localFile(UNICODE_NAME, 'unicode\n'),
    '::/EFI/debian/',
  ]);
  run('mcopy', ['-i', target, localFile('nested.bin', NESTED), '::/EFI/debian/fw/deep/nested.bin']);
  const manyDir = join(workDir, 'src', 'many');
  mkdirSync(manyDir, { recursive: true });
  const manyFiles: string[] = [];
  for (let i = 0; i < MANY_COUNT; i++) {
    const path = join(manyDir, `entry-${String(i).padStart(3, '0')}.txt`);
    writeFileSync(path, `entry ${i}\n`);
    manyFiles.push(path);
  }
  run('mcopy', ['-i', target, ...manyFiles, '::/many/']);
  run('mdel', ['-i', target, '::/EFI/debian/Deleted Long Name.txt', '::/EFI/debian/GONE.TXT']);
}

before(() => {
  workDir = mkdtempSync(join(tmpdir(), 'mamori-fat-'));
  mkdirSync(join(workDir, 'src'));
  for (const type of ['fat12', 'fat16', 'fat32'] as const) {
    const image = join(workDir, `${type}.img`);
    run('mkfs.fat', ['-F', type.slice(3), '-n', 'ESP', '-i', '1234ABCD', '-C', image, String(IMAGE_KIB[type])]);
    populate(image);
    images.set(type, readFileSync(image));
  }
  // A whole disk whose FAT partition starts 1 MiB in; no label given, so it reads back as ''.
  const disk = join(workDir, 'disk.img');
  run('mkfs.fat', ['-F', '16', '-i', '0BADF00D', `--offset=${OFFSET_SECTORS}`, '-C', disk, String(OFFSET_FS_KIB)]);
  run('mmd', ['-i', `${disk}@@${OFFSET_SECTORS * 512}`, '::/EFI', '::/EFI/BOOT']);
  run('mcopy', [
    '-i',
    `${disk}@@${OFFSET_SECTORS * 512}`,
    join(workDir, 'src', 'BOOTX64.EFI'),
    '::/EFI/BOOT/BOOTX64.EFI',
  ]);
  offsetDisk = readFileSync(disk);
});

after(() => {
  if (workDir !== '') rmSync(workDir, { recursive: true, force: true });
});

function imageOf(type: FatType): Buffer {
  const image = images.get(type);
  assert.ok(image, `image ${type} was built`);
  return image;
}

/** A reader over a private copy, so a test may damage it. */
function copyOf(type: FatType): Buffer {
  return Buffer.from(imageOf(type));
}

async function assertUnreadable(promise: Promise<unknown>, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isMamoriError(e, 'FILESYSTEM_UNREADABLE'), `expected FILESYSTEM_UNREADABLE, got ${String(e)}`);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

/** Counts reads, and those touching a byte range (the FAT), to prove caching and chunking. */
function countingReader(
  base: ByteReader,
  watchStart: number,
  watchEnd: number,
): ByteReader & { reads: number; watchedReads: number } {
  const counter = {
    size: base.size,
    reads: 0,
    watchedReads: 0,
    read(offset: number, length: number): Promise<Buffer> {
      counter.reads += 1;
      if (offset < watchEnd && offset + length > watchStart) counter.watchedReads += 1;
      return base.read(offset, length);
    },
  };
  return counter;
}

// --- Raw structure helpers for damaging images (the test's own minimal BPB reading) ---

interface RawLayout {
  bytesPerSector: number;
  fatOffset: number;
  fatBytes: number;
  fatCount: number;
}

function rawLayout(image: Buffer): RawLayout {
  const bytesPerSector = image.readUInt16LE(11);
  const fatSectors = image.readUInt16LE(22) || image.readUInt32LE(36);
  return {
    bytesPerSector,
    fatOffset: image.readUInt16LE(14) * bytesPerSector,
    fatBytes: fatSectors * bytesPerSector,
    fatCount: image.readUInt8(16),
  };
}

function getFatEntry(image: Buffer, type: FatType, cluster: number): number {
  const fat = rawLayout(image).fatOffset;
  if (type === 'fat32') return image.readUInt32LE(fat + cluster * 4) & 0x0fffffff;
  if (type === 'fat16') return image.readUInt16LE(fat + cluster * 2);
  const pair = image.readUInt16LE(fat + cluster + (cluster >> 1));
  return (cluster & 1) === 1 ? pair >> 4 : pair & 0xfff;
}

/** The cluster `steps` links down the chain from `first` (mtools does not always allocate contiguously). */
function clusterAfter(image: Buffer, type: FatType, first: number, steps: number): number {
  let cluster = first;
  for (let i = 0; i < steps; i++) cluster = getFatEntry(image, type, cluster);
  assert.ok(cluster >= 2 && cluster < BAD_CLUSTER[type], `chain from ${first} has ${steps + 1} clusters`);
  return cluster;
}

/** Writes a FAT entry in every FAT copy. */
function setFatEntry(image: Buffer, type: FatType, cluster: number, value: number): void {
  const layout = rawLayout(image);
  for (let copy = 0; copy < layout.fatCount; copy++) {
    const fat = layout.fatOffset + copy * layout.fatBytes;
    if (type === 'fat32')
      image.writeUInt32LE((image.readUInt32LE(fat + cluster * 4) & 0xf0000000) | value, fat + cluster * 4);
    else if (type === 'fat16') image.writeUInt16LE(value, fat + cluster * 2);
    else {
      const at = fat + cluster + (cluster >> 1);
      const pair = image.readUInt16LE(at);
      image.writeUInt16LE((cluster & 1) === 1 ? (pair & 0x000f) | (value << 4) : (pair & 0xf000) | value, at);
    }
  }
}

/** Byte offset of the (only) directory entry with this raw 11-byte 8.3 name (entries are 32-byte aligned). */
function shortEntryOffset(image: Buffer, rawName: string): number {
  const needle = Buffer.from(rawName, 'latin1');
  const found: number[] = [];
  for (let at = image.indexOf(needle); at !== -1; at = image.indexOf(needle, at + 1)) {
    if (at % 32 === 0) found.push(at);
  }
  assert.equal(found.length, 1, `exactly one directory entry ${rawName}`);
  return found[0] ?? -1;
}

function firstClusterOf(image: Buffer, rawName: string): number {
  const at = shortEntryOffset(image, rawName);
  return image.readUInt16LE(at + 20) * 0x10000 + image.readUInt16LE(at + 26);
}

// --- Tests ---

test('parseFatBootSector recognises each FAT type and reports label, serial and sizes', () => {
  for (const type of ['fat12', 'fat16', 'fat32'] as const) {
    const info = parseFatBootSector(imageOf(type).subarray(0, 512));
    assert.ok(info);
    assert.equal(info.type, type);
    assert.equal(info.label, 'ESP');
    assert.equal(info.serial, '1234-ABCD');
    assert.equal(info.totalBytes, IMAGE_KIB[type] * KiB);
    assert.ok(info.clusterSize >= 512 && (info.clusterSize & (info.clusterSize - 1)) === 0);
  }
});

test('parseFatBootSector rejects sectors that are not FAT boot sectors', () => {
  const good = imageOf('fat32').subarray(0, 512);
  const damage = (patch: (bs: Buffer) => void): Buffer => {
    const bs = Buffer.from(good);
    patch(bs);
    return bs;
  };
  assert.equal(parseFatBootSector(Buffer.alloc(512)), null);
  assert.equal(parseFatBootSector(good.subarray(0, 100)), null);
  assert.equal(parseFatBootSector(damage((bs) => bs.writeUInt16LE(0, 510))), null, 'no 0x55AA');
  assert.equal(
    parseFatBootSector(
      damage((bs) => {
        bs[0] = 0x00;
      }),
    ),
    null,
    'no jump',
  );
  assert.equal(parseFatBootSector(damage((bs) => bs.writeUInt16LE(513, 11))), null, 'bytes per sector');
  assert.equal(parseFatBootSector(damage((bs) => bs.writeUInt16LE(8192, 11))), null, 'bytes per sector too big');
  assert.equal(
    parseFatBootSector(
      damage((bs) => {
        bs[13] = 3;
      }),
    ),
    null,
    'sectors per cluster',
  );
  assert.equal(parseFatBootSector(damage((bs) => bs.writeUInt16LE(0, 14))), null, 'reserved sectors');
  assert.equal(
    parseFatBootSector(
      damage((bs) => {
        bs[16] = 0;
      }),
    ),
    null,
    'FAT count',
  );
  // The 0xE9 near jump is accepted too.
  assert.ok(
    parseFatBootSector(
      damage((bs) => {
        bs[0] = 0xe9;
      }),
    ),
  );
});

for (const type of ['fat12', 'fat16', 'fat32'] as const) {
  test(`${type}: open() reports the volume`, async () => {
    const fat = await FatReader.open(bufferReader(imageOf(type)));
    assert.equal(fat.info.type, type);
    assert.equal(fat.info.label, 'ESP');
    assert.equal(fat.info.serial, '1234-ABCD');
    assert.equal(fat.info.totalBytes, IMAGE_KIB[type] * KiB);
  });

  test(`${type}: lists directories with long, lower-case and Unicode names, without deleted entries`, async () => {
    const fat = await FatReader.open(bufferReader(imageOf(type)));
    assert.deepEqual(await fat.listDir('/'), [
      { name: 'EFI', type: 'dir', size: 0 },
      { name: 'many', type: 'dir', size: 0 },
    ]);
    assert.deepEqual(await fat.listDir('/EFI'), [
      { name: 'BOOT', type: 'dir', size: 0 },
      { name: 'debian', type: 'dir', size: 0 },
    ]);
    assert.deepEqual(await fat.listDir('/EFI/BOOT'), [{ name: 'BOOTX64.EFI', type: 'file', size: BOOT_EFI.length }]);
    assert.deepEqual(await fat.listDir('/EFI/debian'), [
      { name: LONG_NAME, type: 'file', size: 10 },
      { name: 'empty.txt', type: 'file', size: 0 },
      { name: 'fw', type: 'dir', size: 0 },
      { name: 'grubx64.efi', type: 'file', size: GRUB_EFI.length },
      { name: 'Shim.Efi', type: 'file', size: 11 },
      { name: UNICODE_NAME, type: 'file', size: 8 },
    ]);
  });

  test(`${type}: reads files exactly, including one spanning many clusters, an empty one and a nested one`, async () => {
    const fat = await FatReader.open(bufferReader(imageOf(type)));
    assert.ok(GRUB_EFI.length / fat.info.clusterSize >= 75, 'the big file spans many clusters');
    assert.deepEqual(await fat.readFile('/EFI/debian/grubx64.efi'), GRUB_EFI);
    assert.deepEqual(await fat.readFile('/EFI/BOOT/BOOTX64.EFI'), BOOT_EFI);
    assert.deepEqual(await fat.readFile('/EFI/debian/empty.txt'), Buffer.alloc(0));
    assert.deepEqual(await fat.readFile('/EFI/debian/fw/deep/nested.bin'), NESTED);
    assert.equal((await fat.readFile(`/EFI/debian/${LONG_NAME}`))?.toString(), 'long name\n');
    assert.equal((await fat.readFile(`/EFI/debian/${UNICODE_NAME}`))?.toString(), 'unicode\n');
  });

  test(`${type}: maxBytes reads only the start of a file`, async () => {
    const fat = await FatReader.open(bufferReader(imageOf(type)));
    assert.deepEqual(await fat.readFile('/EFI/BOOT/BOOTX64.EFI', { maxBytes: 2 }), Buffer.from('MZ'));
    const partial = await fat.readFile('/EFI/debian/grubx64.efi', { maxBytes: 5000 });
    assert.deepEqual(partial, GRUB_EFI.subarray(0, 5000));
    assert.deepEqual(await fat.readFile('/EFI/debian/grubx64.efi', { maxBytes: 10 * 1024 * 1024 }), GRUB_EFI);
    assert.deepEqual(await fat.readFile('/EFI/debian/grubx64.efi', { maxBytes: 0 }), Buffer.alloc(0));
  });

  test(`${type}: a directory of ${MANY_COUNT} entries over several clusters`, async () => {
    const fat = await FatReader.open(bufferReader(imageOf(type)));
    const listing = await fat.listDir('/many');
    assert.ok(listing);
    assert.equal(listing.length, MANY_COUNT);
    // 13-character names take exactly one long-name entry with no terminator: 64 bytes per file.
    assert.ok(MANY_COUNT * 64 > 2 * fat.info.clusterSize, 'the directory spans several clusters');
    listing.forEach((entry, i) => {
      assert.deepEqual(entry, {
        name: `entry-${String(i).padStart(3, '0')}.txt`,
        type: 'file',
        size: `entry ${i}\n`.length,
      });
    });
    assert.equal((await fat.readFile('/many/entry-299.txt'))?.toString(), 'entry 299\n');
  });

  test(`${type}: lookups ignore case, accept 8.3 aliases, and return null for what is missing`, async () => {
    const fat = await FatReader.open(bufferReader(imageOf(type)));
    assert.deepEqual(await fat.readFile('/efi/boot/bootx64.efi', { maxBytes: 2 }), Buffer.from('MZ'));
    assert.deepEqual(await fat.readFile('EFI//Debian/./fw/../GRUBX64.EFI/', { maxBytes: 3 }), GRUB_EFI.subarray(0, 3));
    assert.equal((await fat.readFile('/EFI/debian/ALONGF~1.TXT'))?.toString(), 'long name\n');
    assert.equal((await fat.listDir('/EFI/DEBIAN/FW'))?.length, 1);
    assert.equal(await fat.listDir('/EFI/ubuntu'), null);
    assert.equal(await fat.listDir('/EFI/BOOT/BOOTX64.EFI'), null, 'a file is not a directory');
    assert.equal(await fat.listDir('/EFI/BOOT/BOOTX64.EFI/x'), null);
    assert.equal(await fat.readFile('/EFI/BOOT'), null, 'a directory is not a file');
    assert.equal(await fat.readFile('/'), null);
    assert.equal(await fat.readFile('/EFI/BOOT/missing.efi'), null);
    assert.equal(await fat.readFile('/EFI/debian/Deleted Long Name.txt'), null, 'deleted files are gone');
    assert.equal(await fat.readFile('/EFI/debian/GONE.TXT'), null);
  });

  test(`${type}: a FAT chain that loops makes readFile fail instead of hanging`, async () => {
    const selfLoop = copyOf(type);
    const first = firstClusterOf(selfLoop, 'GRUBX64 EFI');
    setFatEntry(selfLoop, type, first, first);
    const fat = await FatReader.open(bufferReader(selfLoop));
    await assertUnreadable(fat.readFile('/EFI/debian/grubx64.efi'), /loops.*byte offset \d+/);

    const longLoop = copyOf(type);
    // Point the file's 10th cluster back at its 1st.
    setFatEntry(longLoop, type, clusterAfter(longLoop, type, first, 9), first);
    await assertUnreadable((await FatReader.open(bufferReader(longLoop))).readFile('/EFI/debian/grubx64.efi'), /loops/);
  });

  test(`${type}: a chain to an impossible cluster, a bad cluster or a free one is unreadable`, async () => {
    const badMarker = BAD_CLUSTER[type];
    // 1 is reserved, 0 is free, and badMarker - 7 is beyond the last cluster of these small volumes.
    for (const next of [1, 0, badMarker, badMarker - 7]) {
      const image = copyOf(type);
      const first = firstClusterOf(image, 'GRUBX64 EFI');
      setFatEntry(image, type, clusterAfter(image, type, first, 3), next);
      const fat = await FatReader.open(bufferReader(image));
      await assertUnreadable(fat.readFile('/EFI/debian/grubx64.efi'), /cluster/);
      // The first cluster alone is still fine.
      assert.equal((await fat.readFile('/EFI/debian/grubx64.efi', { maxBytes: 10 }))?.length, 10);
    }
  });

  test(`${type}: a chain that ends before the file does is unreadable`, async () => {
    const image = copyOf(type);
    const first = firstClusterOf(image, 'GRUBX64 EFI');
    setFatEntry(image, type, clusterAfter(image, type, first, 1), BAD_CLUSTER[type] + 8); // the usual end-of-chain value
    await assertUnreadable(
      (await FatReader.open(bufferReader(image))).readFile('/EFI/debian/grubx64.efi'),
      /ends after 2 clusters/,
    );
  });

  test(`${type}: a looping directory chain makes listDir fail instead of hanging`, async () => {
    const image = copyOf(type);
    const first = firstClusterOf(image, 'MANY       ');
    setFatEntry(image, type, clusterAfter(image, type, first, 1), first);
    const fat = await FatReader.open(bufferReader(image));
    await assertUnreadable(fat.listDir('/many'), /directory \/many.*loops/);
    await assertUnreadable(fat.readFile('/many/entry-000.txt'));
  });

  test(`${type}: a long-name chain with a wrong checksum falls back to the 8.3 name`, async () => {
    const image = copyOf(type);
    const shortAt = shortEntryOffset(image, 'ALONGF~1TXT');
    const lastLfnPart = shortAt - 32; // sequence 1 sits right before the short entry
    assert.equal(image[lastLfnPart + 11], 0x0f);
    image[lastLfnPart + 13] = (image[lastLfnPart + 13] ?? 0) ^ 0xff;
    const fat = await FatReader.open(bufferReader(image));
    const names = (await fat.listDir('/EFI/debian'))?.map((e) => e.name);
    assert.ok(names?.includes('ALONGF~1.TXT'), `fallback name in ${String(names)}`);
    assert.ok(!names?.includes(LONG_NAME));
  });

  test(`${type}: a name starting with byte 0x05 means 0xE5 (σ in code page 437)`, async () => {
    const image = copyOf(type);
    image[shortEntryOffset(image, 'BOOTX64 EFI')] = 0x05;
    const fat = await FatReader.open(bufferReader(image));
    assert.deepEqual(
      (await fat.listDir('/EFI/BOOT'))?.map((e) => e.name),
      ['σOOTX64.EFI'],
    );
    assert.deepEqual(await fat.readFile('/EFI/BOOT/σootx64.efi', { maxBytes: 2 }), Buffer.from('MZ'));
  });
}

test('a subdirectory entry with cluster 0 is unreadable rather than read as the FAT16 root', async () => {
  const image = copyOf('fat16');
  image.writeUInt16LE(0, shortEntryOffset(image, 'FW         ') + 26);
  const fat = await FatReader.open(bufferReader(image));
  await assertUnreadable(fat.listDir('/EFI/debian/fw'), /first cluster 0/);
  await assertUnreadable(fat.readFile('/EFI/debian/fw/deep/nested.bin'), /first cluster 0/);
});

test('the volume label entry in the root directory wins over the boot sector', async () => {
  const image = copyOf('fat16');
  const labelEntry = shortEntryOffset(image, 'ESP        ');
  assert.equal(image[labelEntry + 11], 0x08);
  image.write('RENAMED    ', labelEntry, 'latin1');
  assert.equal(parseFatBootSector(image.subarray(0, 512))?.label, 'ESP');
  assert.equal((await FatReader.open(bufferReader(image))).info.label, 'RENAMED');
});

test('reads a partition at an offset inside a disk through a slice, with partition-relative offsets', async () => {
  const partitionStart = OFFSET_SECTORS * 512;
  const partition = sliceReader(bufferReader(offsetDisk), partitionStart, OFFSET_FS_KIB * KiB);
  const fat = await FatReader.open(partition);
  assert.equal(fat.info.type, 'fat16');
  assert.equal(fat.info.label, '');
  assert.equal(fat.info.serial, '0BAD-F00D');
  assert.deepEqual(await fat.listDir('/EFI/BOOT'), [{ name: 'BOOTX64.EFI', type: 'file', size: BOOT_EFI.length }]);
  assert.deepEqual(await fat.readFile('/EFI/BOOT/BOOTX64.EFI'), BOOT_EFI);
  // The disk's own first sector is not a FAT boot sector.
  await assertUnreadable(FatReader.open(bufferReader(offsetDisk)), /byte offset 0/);
});

test('a FAT32 volume with fewer clusters than the FAT32 minimum (mkfs.fat warns but makes it) reads as FAT32', async () => {
  const image = join(workDir, 'small32.img');
  // mtools itself goes by the count and will not write to it, so only the empty root is checked.
  run('mkfs.fat', ['-F', '32', '-n', 'SMALL', '-C', image, '20480']);
  const bytes = readFileSync(image);
  const fat = await FatReader.open(bufferReader(bytes));
  assert.equal(fat.info.type, 'fat32');
  assert.ok(fat.info.totalBytes / fat.info.clusterSize < 65525);
  // The label comes from the volume-label entry in the root cluster chain, so the root was found.
  bytes.write('NO NAME    ', 71, 'latin1');
  assert.equal(parseFatBootSector(bytes.subarray(0, 512))?.label, '');
  assert.equal((await FatReader.open(bufferReader(bytes))).info.label, 'SMALL');
  assert.deepEqual(await fat.listDir('/'), []);
});

test('open() refuses a zeroed image and one too small for a boot sector', async () => {
  await assertUnreadable(FatReader.open(bufferReader(Buffer.alloc(1024 * KiB))), /0x55AA/);
  await assertUnreadable(FatReader.open(bufferReader(Buffer.alloc(100))), /too small/);
});

test('open() refuses a boot sector whose regions lie beyond the end of the partition', async () => {
  await assertUnreadable(FatReader.open(bufferReader(imageOf('fat32').subarray(0, 64 * KiB))), /beyond the end/);
});

test('readFile refuses more than 64 MiB of one file', async () => {
  const image = copyOf('fat32');
  const entry = shortEntryOffset(image, 'GRUBX64 EFI');
  image.writeUInt32LE(65 * 1024 * 1024, entry + 28); // claim a 65 MiB file
  const fat = await FatReader.open(bufferReader(image));
  await assertUnreadable(fat.readFile('/EFI/debian/grubx64.efi'), /maxBytes/);
  assert.deepEqual(await fat.readFile('/EFI/debian/grubx64.efi', { maxBytes: 2000 }), GRUB_EFI.subarray(0, 2000));
});

test('reads the FAT in large chunks and caches FAT and directories', async () => {
  const image = imageOf('fat32');
  const layout = rawLayout(image);
  const reader = countingReader(
    bufferReader(image),
    layout.fatOffset,
    layout.fatOffset + layout.fatBytes * layout.fatCount,
  );
  const fat = await FatReader.open(reader);
  // A FAT32 root directory is a cluster chain, so open() reads (the first chunk of) the FAT once.
  assert.equal(reader.watchedReads, 1);
  const afterOpen = reader.reads;

  assert.deepEqual(await fat.readFile('/EFI/debian/grubx64.efi'), GRUB_EFI);
  assert.ok(
    reader.watchedReads <= 1,
    `the FAT is read in one chunk here, not per cluster (${reader.watchedReads} FAT reads)`,
  );
  assert.ok(reader.reads - afterOpen <= 6, `few reads for a contiguous 300 KiB file (${reader.reads - afterOpen})`);

  const beforeRepeat = reader.reads;
  await fat.listDir('/EFI/debian');
  await fat.listDir('/EFI');
  assert.equal(reader.reads, beforeRepeat, 'directories already read are cached');
  const watchedBefore = reader.watchedReads;
  await fat.readFile('/EFI/debian/grubx64.efi');
  assert.equal(reader.watchedReads, watchedBefore, 'the FAT is cached');
});

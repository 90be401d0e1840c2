import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bufferReader } from '../../../src/inspect/byte-reader.js';
import { NtfsReader } from '../../../src/inspect/ntfs-reader.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { counting } from '../../harness/counting-reader.js';

// mkntfs and ntfscp live in sbin, which a test runner's PATH may lack.
const TOOL_ENV = { ...process.env, PATH: `/usr/sbin:/sbin:${process.env['PATH'] ?? '/usr/bin:/bin'}` };
const VOLUME_BYTES = 64 * 1024 * 1024;
const MANY_FILES = 500;
/** Enough alternating one-cluster growths of two files that ntfs-3g spills one file's runs into an extension record. */
const FRAGMENT_STEPS = 240;
const NON_ASCII_NAME = 'Ünïcödé – файл.txt';
const LONG_NAME = 'A Very Long File Name For Testing.txt';

function run(command: string, args: string[]): string {
  const result = spawnSync(command, args, { env: TOOL_ENV, encoding: 'utf8' });
  if (result.error !== undefined) throw result.error;
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

/** Deterministic pseudo-random bytes (xorshift32), so expected contents need no fixture files. */
function pseudoRandom(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function expectUnreadable(promise: Promise<unknown>, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isMamoriError(e, 'FILESYSTEM_UNREADABLE'), `expected FILESYSTEM_UNREADABLE, got ${String(e)}`);
    if (pattern !== undefined) assert.match((e as Error).message, pattern);
    return true;
  });
}

function inodeOf(image: string, path: string): number {
  const match = /Dumping Inode (\d+)/.exec(run('ntfsinfo', ['-F', path, image]));
  assert.ok(match?.[1], `ntfsinfo found no inode for ${path}`);
  return Number(match[1]);
}

const expected = {
  software: pseudoRandom(300 * 1024 + 123, 1),
  system: pseudoRandom(200 * 1024, 2),
  big: pseudoRandom(3 * 1024 * 1024, 3),
  tiny: Buffer.from('tiny resident file\n'.repeat(5)),
  nonAscii: Buffer.from('ünïcödé contents'),
  fragmented: pseudoRandom(FRAGMENT_STEPS * 4096, 4),
};

let work = '';
let image: Buffer = Buffer.alloc(0);
let imagePath = '';
let mftOffset = 0;
let softwareInode = 0;
let fragmentedHasAttributeList = false;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-ntfs-'));
  const tree = join(work, 'tree');
  const config = join(tree, 'Windows', 'System32', 'config');
  await mkdir(config, { recursive: true });
  await writeFile(join(config, 'SOFTWARE'), expected.software);
  await writeFile(join(config, 'SYSTEM'), expected.system);
  await mkdir(join(tree, 'Program Files', 'App'), { recursive: true });
  await writeFile(join(tree, 'Program Files', 'App', 'readme.txt'), 'hello\n');
  await mkdir(join(tree, 'Many'));
  for (let i = 0; i < MANY_FILES; i++)
    await writeFile(join(tree, 'Many', `file-${String(i).padStart(4, '0')}.txt`), `file ${i}\n`);
  await mkdir(join(tree, 'Dos'));
  await writeFile(join(tree, 'Dos', LONG_NAME), 'long');
  await writeFile(join(tree, 'Dos', 'AVERYL~1.TXT'), 'long');
  await writeFile(join(tree, 'big.bin'), expected.big);
  await writeFile(join(tree, 'tiny.txt'), expected.tiny);
  await writeFile(join(tree, NON_ASCII_NAME), expected.nonAscii);
  await writeFile(join(tree, 'sparse.bin'), '');
  await writeFile(join(tree, 'empty.txt'), '');

  const wim = join(work, 't.wim');
  imagePath = join(work, 'part.ntfs');
  run('wimlib-imagex', ['capture', tree, wim, '--no-acls', '--compress=none']);
  await writeFile(imagePath, '');
  await truncate(imagePath, VOLUME_BYTES);
  run('mkntfs', [
    '-q',
    '-F',
    '-Q',
    '-L',
    'Windows',
    '-p',
    '2048',
    '-s',
    '512',
    '-H',
    '255',
    '-S',
    '63',
    imagePath,
    String(VOLUME_BYTES / 512),
  ]);
  run('wimlib-imagex', ['apply', wim, '1', imagePath]);

  // Fragmentation: grow two files one cluster at a time in turn, so each growth lands after
  // the other file's last cluster. After ~215 runs the $DATA no longer fits in one record.
  const step = join(work, 'step');
  for (let i = 1; i <= FRAGMENT_STEPS; i++) {
    await writeFile(step, expected.fragmented.subarray(0, i * 4096));
    run('ntfscp', ['-q', imagePath, step, '/fragmented.bin']);
    run('ntfscp', ['-q', imagePath, step, '/interleaved.bin']);
  }
  fragmentedHasAttributeList = run('ntfsinfo', ['-F', '/fragmented.bin', imagePath]).includes('$ATTRIBUTE_LIST');

  // A sparse file whose whole 1 MiB was never written: data size 1 MiB, one sparse run.
  run('ntfstruncate', [imagePath, String(inodeOf(imagePath, '/sparse.bin')), '0x80', String(1024 * 1024)]);

  const mftLcn = /LCN of Data Attribute for FILE_MFT:\s*(\d+)/.exec(run('ntfsinfo', ['-m', imagePath]));
  assert.ok(mftLcn?.[1]);
  mftOffset = Number(mftLcn[1]) * 4096;
  softwareInode = inodeOf(imagePath, '/Windows/System32/config/SOFTWARE');
  image = await readFile(imagePath);
});

after(async () => {
  if (work !== '') await rm(work, { recursive: true, force: true });
});

test('info: label, serial from the boot sector, geometry', async () => {
  const ntfs = await NtfsReader.open(bufferReader(image));
  const serial = Buffer.from(image.subarray(0x48, 0x50)).reverse().toString('hex').toUpperCase();
  assert.deepEqual(ntfs.info, {
    label: 'Windows',
    serial,
    clusterSize: 4096,
    mftRecordSize: 1024,
    totalBytes: image.readUInt32LE(0x28) * 512,
  });
  assert.match(ntfs.info.serial, /^[0-9A-F]{16}$/);
});

test('reads registry hives exactly, with case-insensitive paths, touching little of the volume', async () => {
  const reader = counting(bufferReader(image));
  const ntfs = await NtfsReader.open(reader);
  const before = { reads: reader.reads, bytes: reader.bytes };
  assert.deepEqual(await ntfs.readFile('/Windows/System32/config/SOFTWARE'), expected.software);
  assert.ok(reader.reads - before.reads < 20, `${reader.reads - before.reads} reads`);
  assert.ok(reader.bytes - before.bytes < expected.software.length + 64 * 1024, `${reader.bytes - before.bytes} bytes`);
  assert.deepEqual(await ntfs.readFile('windows/SYSTEM32/Config/system'), expected.system);
  assert.deepEqual(await ntfs.readFile('/WINDOWS//system32/config/Software'), expected.software);
});

test('reads non-resident, resident, empty, sparse and non-ASCII-named files', async () => {
  const ntfs = await NtfsReader.open(bufferReader(image));
  assert.deepEqual(await ntfs.readFile('/big.bin'), expected.big);
  assert.deepEqual(await ntfs.readFile('/tiny.txt'), expected.tiny);
  assert.deepEqual(await ntfs.readFile('/empty.txt'), Buffer.alloc(0));
  assert.deepEqual(await ntfs.readFile('/sparse.bin'), Buffer.alloc(1024 * 1024));
  assert.deepEqual(await ntfs.readFile(`/${NON_ASCII_NAME}`), expected.nonAscii);
  assert.deepEqual(await ntfs.readFile(`/${NON_ASCII_NAME.toUpperCase()}`), expected.nonAscii);
  assert.deepEqual(await ntfs.readFile('/Program Files/App/readme.txt'), Buffer.from('hello\n'));
});

test('reads a fragmented file whose runs spill into another record through $ATTRIBUTE_LIST', async () => {
  assert.ok(
    fragmentedHasAttributeList,
    'the fixture should have produced an $ATTRIBUTE_LIST (ntfs-3g behaviour changed?)',
  );
  const ntfs = await NtfsReader.open(bufferReader(image));
  assert.deepEqual(await ntfs.readFile('/fragmented.bin'), expected.fragmented);
  assert.deepEqual(await ntfs.readFile('/interleaved.bin'), expected.fragmented);
});

test('lists directories sorted, typed, without metafiles', async () => {
  const ntfs = await NtfsReader.open(bufferReader(image));
  const root = await ntfs.listDir('/');
  assert.ok(root);
  assert.deepEqual(
    root.map((e) => e.name),
    [
      'big.bin',
      'Dos',
      'empty.txt',
      'fragmented.bin',
      'interleaved.bin',
      'Many',
      'Program Files',
      'sparse.bin',
      'tiny.txt',
      'Windows',
      NON_ASCII_NAME,
    ], // upper-cased code unit order, as NTFS sorts
  );
  assert.deepEqual(
    root.find((e) => e.name === 'Windows'),
    { name: 'Windows', type: 'dir' },
  );
  assert.deepEqual(
    root.find((e) => e.name === 'tiny.txt'),
    { name: 'tiny.txt', type: 'file' },
  );
  assert.deepEqual(await ntfs.listDir('/windows/system32/CONFIG'), [
    { name: 'SOFTWARE', type: 'file' },
    { name: 'SYSTEM', type: 'file' },
  ]);
  assert.deepEqual(await ntfs.listDir('/Program Files'), [{ name: 'App', type: 'dir' }]);
});

test('walks a directory large enough to need index blocks', async () => {
  const ntfs = await NtfsReader.open(bufferReader(image));
  const many = await ntfs.listDir('/Many');
  assert.ok(many);
  assert.equal(many.length, MANY_FILES);
  assert.deepEqual(
    many.map((e) => e.name),
    Array.from({ length: MANY_FILES }, (_, i) => `file-${String(i).padStart(4, '0')}.txt`),
  );
  for (const i of [0, 1, 137, 250, 321, 498, 499]) {
    assert.deepEqual(await ntfs.readFile(`/many/FILE-${String(i).padStart(4, '0')}.TXT`), Buffer.from(`file ${i}\n`));
  }
  assert.equal(await ntfs.readFile('/Many/file-0500.txt'), null);
  assert.equal(await ntfs.readFile('/Many/file-0000.tx'), null);
  assert.equal(await ntfs.readFile('/Many/a'), null);
  assert.equal(await ntfs.readFile('/Many/zzz'), null);
});

test('absent paths, files as directories and directories as files give null', async () => {
  const ntfs = await NtfsReader.open(bufferReader(image));
  assert.equal(await ntfs.readFile('/Windows'), null);
  assert.equal(await ntfs.readFile('/'), null);
  assert.equal(await ntfs.listDir('/tiny.txt'), null);
  assert.equal(await ntfs.listDir('/NoSuchDir'), null);
  assert.equal(await ntfs.readFile('/Windows/System32/config/SAM'), null);
  assert.equal(await ntfs.readFile('/tiny.txt/x'), null);
  assert.equal(await ntfs.readFile('/Ünïcödé – файл.txt.bak'), null);
});

test('maxBytes caps what readFile will load', async () => {
  const ntfs = await NtfsReader.open(bufferReader(image));
  await expectUnreadable(ntfs.readFile('/big.bin', { maxBytes: 1024 * 1024 }), /limit/);
  assert.equal((await ntfs.readFile('/big.bin', { maxBytes: expected.big.length }))?.length, expected.big.length);
});

test('a file that claims more bytes than its partition is refused before anything is allocated', async () => {
  // The million-input fuzz run found this: a damaged $DATA size (or runs mapping the same clusters
  // over and over) made a 12 MiB image allocate hundreds of MiB for one hive.
  const patched = Buffer.from(image);
  const record = mftOffset + inodeOf(imagePath, '/big.bin') * 1024;
  let attr = record + patched.readUInt16LE(record + 0x14);
  while (patched.readUInt32LE(attr) !== 0x80) attr += patched.readUInt32LE(attr + 4);
  assert.equal(patched.readUInt8(attr + 8), 1, '$DATA of /big.bin is non-resident');
  const claimed = 400 * 1024 * 1024; // under the 512 MiB maxBytes default, over the 64 MiB volume
  patched.writeBigUInt64LE(BigInt(claimed), attr + 0x28);
  patched.writeBigUInt64LE(BigInt(claimed), attr + 0x30);
  const ntfs = await NtfsReader.open(bufferReader(patched));
  const before = process.memoryUsage().arrayBuffers;
  await expectUnreadable(
    ntfs.readFile('/big.bin'),
    new RegExp(`claims ${claimed} bytes, more than its ${VOLUME_BYTES}-byte partition`),
  );
  assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024, 'no allocation at the claimed size');
  assert.equal(
    (await ntfs.readFile('/tiny.txt'))?.toString(),
    (await NtfsReader.open(bufferReader(image)).then((n) => n.readFile('/tiny.txt')))?.toString(),
  );
});

test('hides DOS 8.3 names (namespace 2) from listings but still resolves them', async () => {
  // Debian's tools write POSIX names only, so mark the short alias's index entry as a DOS name
  // in place (the directory is small: its index lives in its MFT record's $INDEX_ROOT).
  const patched = Buffer.from(image);
  const dirRecord = mftOffset + inodeOf(imagePath, '/Dos') * 1024;
  const alias = patched.indexOf(Buffer.from('AVERYL~1.TXT', 'utf16le'), dirRecord);
  assert.ok(alias > dirRecord && alias < dirRecord + 1024, 'alias index entry in the directory record');
  patched[alias - 1] = 2;
  const ntfs = await NtfsReader.open(bufferReader(patched));
  assert.deepEqual(await ntfs.listDir('/Dos'), [{ name: LONG_NAME, type: 'file' }]);
  assert.deepEqual(await ntfs.readFile('/Dos/averyl~1.txt'), Buffer.from('long'));
});

test('rejects a volume that is not NTFS', async () => {
  await expectUnreadable(NtfsReader.open(bufferReader(Buffer.alloc(1024 * 1024))), /NTFS/);
  await expectUnreadable(NtfsReader.open(bufferReader(Buffer.alloc(100))));
  const badGeometry = Buffer.from(image.subarray(0, 1024 * 1024));
  badGeometry.writeUInt16LE(1000, 0x0b);
  await expectUnreadable(NtfsReader.open(bufferReader(badGeometry)), /bytes per sector/);
  const noMft = Buffer.from(image);
  noMft.fill(0, mftOffset, mftOffset + 1024);
  await expectUnreadable(NtfsReader.open(bufferReader(noMft)), /MFT record 0/);
});

test('a torn MFT record (update sequence mismatch) is reported, not read', async () => {
  const patched = Buffer.from(image);
  const tail = mftOffset + softwareInode * 1024 + 510; // last two bytes of the record's first sector
  patched[tail] = (patched[tail] ?? 0) ^ 0xff;
  const ntfs = await NtfsReader.open(bufferReader(patched));
  await expectUnreadable(ntfs.readFile('/Windows/System32/config/SOFTWARE'), /update sequence/);
  assert.deepEqual(await ntfs.readFile('/Windows/System32/config/SYSTEM'), expected.system);
  assert.ok((await ntfs.listDir('/Windows/System32/config'))?.some((e) => e.name === 'SOFTWARE'));
});

test('a damaged index block is reported', async () => {
  const patched = Buffer.from(image);
  let damaged = 0;
  // Every INDX block of /Many loses its signature; the root still points into them.
  for (let pos = patched.indexOf('INDX'); pos >= 0; pos = patched.indexOf('INDX', pos + 4)) {
    if (pos % 4096 === 0) {
      const block = patched.subarray(pos, pos + 4096);
      if (block.includes(Buffer.from('file-0', 'utf16le'))) {
        patched.write('XXXX', pos, 'latin1');
        damaged++;
      }
    }
  }
  assert.ok(damaged > 1);
  const ntfs = await NtfsReader.open(bufferReader(patched));
  await expectUnreadable(ntfs.listDir('/Many'), /INDX/);
  await expectUnreadable(ntfs.readFile('/Many/file-0321.txt'), /INDX/);
});

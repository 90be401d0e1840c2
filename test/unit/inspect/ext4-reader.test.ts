import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, symlink, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bufferReader } from '../../../src/inspect/byte-reader.js';
import { Ext4Reader, parseExt4Superblock } from '../../../src/inspect/ext4-reader.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { counting, type CountingReader } from '../../harness/counting-reader.js';

// e2fsprogs lives in sbin, which a test runner's PATH may lack.
const TOOL_ENV = { ...process.env, PATH: `/usr/sbin:/sbin:${process.env['PATH'] ?? '/usr/bin:/bin'}` };

function run(command: string, args: string[], okStatuses: number[] = [0]): string {
  const result = spawnSync(command, args, { env: TOOL_ENV, encoding: 'utf8' });
  if (result.error !== undefined) throw result.error;
  if (!okStatuses.includes(result.status ?? -1)) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  }
  return result.stdout;
}

const openHandles: FileHandle[] = [];

async function fileReader(path: string): Promise<CountingReader> {
  const handle = await open(path, 'r');
  openHandles.push(handle);
  const { size } = await handle.stat();
  return counting({
    size,
    async read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || length < 0 || offset + length > size)
        throw new RangeError(`read ${offset}+${length} outside ${size}`);
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, offset);
      if (bytesRead !== length) throw new Error(`short read at ${offset}`);
      return buf;
    },
  });
}

async function openImage(path: string): Promise<Ext4Reader> {
  return Ext4Reader.open(await fileReader(path));
}

function dumpe2fsField(image: string, field: string): string {
  const out = run('dumpe2fs', ['-h', image]);
  const line = out.split('\n').find((l) => l.startsWith(`${field}:`));
  assert.ok(line !== undefined, `dumpe2fs has no ${field}`);
  return line.slice(field.length + 1).trim();
}

/** debugfs prints "Flags: 0x..." in its stat output. */
function inodeFlags(image: string, path: string): number {
  const out = run('debugfs', ['-R', `stat ${path}`, image]);
  const match = /Flags: (0x[0-9a-f]+)/.exec(out);
  assert.ok(match?.[1] !== undefined, `debugfs stat ${path}: no flags in ${out}`);
  return Number.parseInt(match[1], 16);
}

/** The byte offset of an inode on the image, from debugfs imap. */
function inodeByteOffset(image: string, path: string, blockSize: number): number {
  const out = run('debugfs', ['-R', `imap ${path}`, image]);
  const match = /located at block (\d+), offset (0x[0-9a-f]+)/.exec(out);
  assert.ok(match?.[1] !== undefined && match[2] !== undefined, `debugfs imap ${path}: ${out}`);
  return Number(match[1]) * blockSize + Number.parseInt(match[2], 16);
}

function inodeGroup(image: string, path: string): number {
  const out = run('debugfs', ['-R', `imap ${path}`, image]);
  const match = /part of block group (\d+)/.exec(out);
  assert.ok(match?.[1] !== undefined, `debugfs imap ${path}: ${out}`);
  return Number(match[1]);
}

async function assertUnreadable(promise: Promise<unknown>, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isMamoriError(e, 'FILESYSTEM_UNREADABLE'), `expected FILESYSTEM_UNREADABLE, got ${String(e)}`);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// The guest tree every image is built from.

const OS_RELEASE =
  'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n';
const REDHAT_RELEASE = 'Rocky Linux release 9.3 (Blue Onyx)\n';
const LONG_DIR = `usr/lib/${'d'.repeat(70)}`;
const LONG_TARGET = `/${LONG_DIR}/target.txt`;
const BIG_SIZE = 400 * 1024; // past 12 + 256 blocks at 1 KiB: needs the double indirect block
const FAR_SPARSE_SIZE = 65 * 1024 * 1024; // its last block needs the triple indirect block at 1 KiB
const SPARSE_SIZE = 5 * 1024 * 1024;
const ISLAND_SIZE = 2 * 1024 * 1024;
const ISLAND_STRIDE = 128 * 1024; // 16 separate extents: more than i_block's 4, so the tree gets depth 1
const MANY_FILES = 2000;
const BOOT_NAMES = ['config-6.1.0-18-amd64', 'grub', 'initrd.img-6.1.0-18-amd64', 'vmlinuz', 'vmlinuz-6.1.0-18-amd64'];

function bigBytes(): Buffer {
  const buf = Buffer.alloc(BIG_SIZE);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + (i >> 10)) & 0xff;
  return buf;
}

function manyName(i: number): string {
  return `f${String(i).padStart(4, '0')}`;
}

async function buildTree(root: string): Promise<void> {
  for (const dir of ['etc', 'boot/grub', LONG_DIR, 'usr/share', 'var', 'many', 'empty'])
    await mkdir(join(root, dir), { recursive: true });
  await writeFile(join(root, 'etc/hostname'), 'testhost\n');
  await writeFile(join(root, 'usr/lib/os-release'), OS_RELEASE);
  await symlink('../usr/lib/os-release', join(root, 'etc/os-release'));
  await writeFile(join(root, 'etc/redhat-release'), REDHAT_RELEASE);
  await symlink('/etc/redhat-release', join(root, 'etc/system-release'));
  await writeFile(join(root, LONG_DIR, 'target.txt'), 'reached through a slow symlink\n');
  await symlink(LONG_TARGET, join(root, 'etc/long-link'));
  await symlink('loop-b', join(root, 'etc/loop-a'));
  await symlink('loop-a', join(root, 'etc/loop-b'));
  await symlink('/nowhere/at/all', join(root, 'etc/dangling'));
  await symlink('usr/lib', join(root, 'lib'));
  await writeFile(join(root, 'boot/vmlinuz-6.1.0-18-amd64'), Buffer.from('MZ-not-really-a-kernel'));
  await writeFile(join(root, 'boot/initrd.img-6.1.0-18-amd64'), Buffer.alloc(10_000, 0x5a));
  await writeFile(join(root, 'boot/config-6.1.0-18-amd64'), 'CONFIG_EXT4_FS=y\n');
  await writeFile(join(root, 'boot/grub/grub.cfg'), 'set timeout=5\n');
  await symlink('vmlinuz-6.1.0-18-amd64', join(root, 'boot/vmlinuz'));
  await writeFile(join(root, 'usr/share/big.bin'), bigBytes());
  await writeSparse(join(root, 'var/sparse.img'), SPARSE_SIZE, [[SPARSE_SIZE - 10, 'SPARSE-END']]);
  await writeSparse(join(root, 'var/far-sparse.img'), FAR_SPARSE_SIZE, [[FAR_SPARSE_SIZE - 4, 'TAIL']]);
  const islands: [number, string][] = [];
  for (let at = 0; at < ISLAND_SIZE; at += ISLAND_STRIDE) islands.push([at, `ISLAND@${at}`]);
  await writeSparse(join(root, 'var/islands.bin'), ISLAND_SIZE, islands);
  for (let i = 0; i < MANY_FILES; i += 200) {
    await Promise.all(
      Array.from({ length: 200 }, (_, k) => writeFile(join(root, 'many', manyName(i + k)), `file ${i + k}\n`)),
    );
  }
}

async function writeSparse(path: string, size: number, pieces: [number, string][]): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  const handle = await open(path, 'r+');
  try {
    for (const [at, text] of pieces) await handle.write(Buffer.from(text), 0, text.length, at);
  } finally {
    await handle.close();
  }
}

function expectedSparse(size: number, pieces: [number, string][]): Buffer {
  const buf = Buffer.alloc(size);
  for (const [at, text] of pieces) buf.write(text, at, 'latin1');
  return buf;
}

function islandPieces(): [number, string][] {
  const pieces: [number, string][] = [];
  for (let at = 0; at < ISLAND_SIZE; at += ISLAND_STRIDE) pieces.push([at, `ISLAND@${at}`]);
  return pieces;
}

let work: string;
let tree: string;
/** ext4, 4 KiB blocks, Debian defaults (64bit, metadata_csum, flex_bg, extents), htree folders. */
let ext4Image: string;
/** ext3, 1 KiB blocks: block maps with indirect blocks, htree folders. */
let ext3Image: string;
/** ext2 without the filetype feature: entry types come from inodes. */
let ext2Image: string;
/** ext4, 1 KiB blocks, 32-byte descriptors, meta_bg with several meta groups. */
let metaBgImage: string;
let inlineImage: string;

function mkfs(image: string, args: string[], root: string, size: string): void {
  run('mke2fs', ['-q', '-F', ...args, '-d', root, image, size]);
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-ext4-'));
  tree = join(work, 'tree');
  await buildTree(tree);
  ext4Image = join(work, 'ext4.img');
  ext3Image = join(work, 'ext3.img');
  ext2Image = join(work, 'ext2.img');
  metaBgImage = join(work, 'metabg.img');
  inlineImage = join(work, 'inline.img');
  mkfs(ext4Image, ['-t', 'ext4', '-b', '4096', '-L', 'rootfs', '-O', '64bit,metadata_csum'], tree, '32M');
  mkfs(ext3Image, ['-t', 'ext3', '-b', '1024', '-L', 'oldroot'], tree, '32M');
  mkfs(ext2Image, ['-t', 'ext2', '-b', '1024', '-O', '^filetype'], tree, '32M');
  mkfs(
    metaBgImage,
    ['-t', 'ext4', '-b', '1024', '-g', '256', '-N', '4096', '-O', '^64bit,^metadata_csum,^resize_inode,meta_bg'],
    tree,
    '32M',
  );
  // mke2fs -d writes plain linear folders; e2fsck -D rebuilds them as htree (dir_index). Status 1 = "fixed".
  for (const image of [ext4Image, ext3Image]) run('e2fsck', ['-f', '-y', '-D', image], [0, 1]);

  const small = join(work, 'small-tree');
  await mkdir(join(small, 'etc/tiny-dir'), { recursive: true });
  await writeFile(join(small, 'etc/hostname'), 'inline-host\n');
  await writeFile(join(small, 'etc/motd'), 'M'.repeat(100)); // past i_block's 60 bytes: continues in system.data
  await writeFile(join(small, 'etc/tiny-dir/a'), 'a');
  await writeFile(join(small, 'etc/tiny-dir/b'), 'b');
  await symlink('../hostname', join(small, 'etc/tiny-dir/host-link'));
  mkfs(inlineImage, ['-t', 'ext4', '-b', '4096', '-O', 'inline_data'], small, '8M');
});

after(async () => {
  for (const handle of openHandles) await handle.close();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Superblock

test('parseExt4Superblock reads what dumpe2fs reads', async () => {
  const image = await readFile(ext4Image);
  const info = parseExt4Superblock(image.subarray(1024, 2048));
  assert.ok(info !== null);
  assert.equal(info.type, 'ext4');
  assert.equal(info.label, 'rootfs');
  assert.equal(info.uuid, dumpe2fsField(ext4Image, 'Filesystem UUID'));
  assert.equal(info.blockSize, 4096);
  assert.equal(info.blocksCount, Number(dumpe2fsField(ext4Image, 'Block count')));
  assert.deepEqual(info.features, dumpe2fsField(ext4Image, 'Filesystem features').split(/\s+/).sort());
  for (const name of ['extent', '64bit', 'metadata_csum', 'flex_bg', 'has_journal', 'dir_index'])
    assert.ok(info.features.includes(name), name);
});

test('parseExt4Superblock: no magic, no answer; unknown feature bits are named by their value', () => {
  assert.equal(parseExt4Superblock(Buffer.alloc(1024)), null);
  const sb = Buffer.alloc(1024);
  sb.writeUInt16LE(0xef53, 0x38);
  sb.writeUInt32LE(0x80, 0x5c); // compat bit 7 has no e2fsprogs name
  sb.writeUInt32LE(0x800, 0x60); // incompat bit 11 neither
  sb.writeUInt32LE(0x4, 0x64); // ro_compat btree_dir: unnamed, and still ext2-compatible
  const info = parseExt4Superblock(sb);
  assert.ok(info !== null);
  assert.deepEqual(info.features, ['compat_0x80', 'incompat_0x800', 'ro_compat_0x4']);
  assert.equal(info.type, 'ext4'); // the unknown incompat bit is nothing ext3 knows
  assert.equal(info.uuid, '00000000-0000-0000-0000-000000000000');
  assert.equal(info.label, '');
});

test('ext2, ext3 and ext4 are told apart the way libblkid does', async () => {
  const types = await Promise.all(
    [ext4Image, ext3Image, ext2Image, metaBgImage].map(async (image) => (await openImage(image)).info),
  );
  assert.deepEqual(
    types.map((t) => t.type),
    ['ext4', 'ext3', 'ext2', 'ext4'],
  );
  const [, ext3, ext2] = types;
  assert.ok(ext3 !== undefined && ext2 !== undefined);
  assert.equal(ext3.label, 'oldroot');
  assert.equal(ext3.blockSize, 1024);
  assert.ok(!ext3.features.includes('extent'));
  assert.ok(ext3.features.includes('has_journal'));
  assert.ok(!ext2.features.includes('has_journal'));
  assert.ok(!ext2.features.includes('filetype'));
  assert.equal(ext3.uuid, dumpe2fsField(ext3Image, 'Filesystem UUID'));
});

test('a partition without an ext superblock, or with an impossible one, does not open', async () => {
  await assertUnreadable(Ext4Reader.open(bufferReader(Buffer.alloc(1024 * 1024))), /0xEF53/);
  await assertUnreadable(Ext4Reader.open(bufferReader(Buffer.alloc(512))), /too small/);
  const image = await readFile(ext3Image);
  const badInodeSize = Buffer.from(image);
  badInodeSize.writeUInt16LE(100, 1024 + 0x58);
  await assertUnreadable(Ext4Reader.open(bufferReader(badInodeSize)), /inode size 100/);
  const noGroups = Buffer.from(image);
  noGroups.writeUInt32LE(0, 1024 + 0x28);
  await assertUnreadable(Ext4Reader.open(bufferReader(noGroups)), /inodes-per-group/);
  // A filesystem bigger than its partition opens, but reading past the end is refused plainly.
  await assertUnreadable(Ext4Reader.open(bufferReader(image.subarray(0, 4096))), /past the end/);
});

// ---------------------------------------------------------------------------------------------
// Files, symlinks, paths

for (const [label, image] of [
  ['ext4', () => ext4Image],
  ['ext3', () => ext3Image],
  ['ext2', () => ext2Image],
  ['ext4 meta_bg', () => metaBgImage],
] as const) {
  test(`${label}: small files, through relative, absolute, slow and directory symlinks`, async () => {
    const fs = await openImage(image());
    assert.equal((await fs.readFile('/etc/hostname'))?.toString(), 'testhost\n');
    assert.equal((await fs.readFile('/etc/os-release'))?.toString(), OS_RELEASE);
    assert.equal((await fs.readFile('/etc/system-release'))?.toString(), REDHAT_RELEASE);
    assert.equal((await fs.readFile('/etc/long-link'))?.toString(), 'reached through a slow symlink\n');
    assert.equal((await fs.readFile('/lib/os-release'))?.toString(), OS_RELEASE);
    assert.equal((await fs.readFile('etc/../etc/./hostname'))?.toString(), 'testhost\n');
    assert.equal((await fs.readFile('/../../etc/hostname'))?.toString(), 'testhost\n');
    assert.equal((await fs.readFile('/boot/vmlinuz'))?.toString(), 'MZ-not-really-a-kernel');
    assert.deepEqual(await fs.readFile('/boot/initrd.img-6.1.0-18-amd64'), Buffer.alloc(10_000, 0x5a));
    assert.equal((await fs.readFile(`/many/${manyName(1999)}`))?.toString(), 'file 1999\n');
  });

  test(`${label}: absent paths, folders and dangling links read as null`, async () => {
    const fs = await openImage(image());
    assert.equal(await fs.readFile('/etc/nope'), null);
    assert.equal(await fs.readFile('/etc/hostname/child'), null);
    assert.equal(await fs.readFile('/etc/hostname/'), null);
    assert.equal(await fs.readFile('/nowhere/hostname'), null);
    assert.equal(await fs.readFile('/etc'), null);
    assert.equal(await fs.readFile('/etc/dangling'), null);
    assert.equal(await fs.listDir('/etc/hostname'), null);
    assert.equal(await fs.listDir('/nope'), null);
  });

  test(`${label}: a 400 KiB file comes back byte for byte, and maxBytes is enforced`, async () => {
    const fs = await openImage(image());
    assert.deepEqual(await fs.readFile('/usr/share/big.bin'), bigBytes());
    await assertUnreadable(
      fs.readFile('/usr/share/big.bin', { maxBytes: 1000 }),
      /409600 bytes, more than the 1000-byte limit/,
    );
  });

  test(`${label}: sparse files read their holes as zeros`, async () => {
    const fs = await openImage(image());
    const sparse = await fs.readFile('/var/sparse.img', { maxBytes: SPARSE_SIZE });
    assert.ok(sparse !== null);
    assert.ok(sparse.equals(expectedSparse(SPARSE_SIZE, [[SPARSE_SIZE - 10, 'SPARSE-END']])));
    const islands = await fs.readFile('/var/islands.bin', { maxBytes: ISLAND_SIZE });
    assert.ok(islands?.equals(expectedSparse(ISLAND_SIZE, islandPieces())));
    const far = await fs.readFile('/var/far-sparse.img', { maxBytes: FAR_SPARSE_SIZE });
    assert.equal(far?.length, FAR_SPARSE_SIZE);
    assert.equal(far.subarray(FAR_SPARSE_SIZE - 4).toString(), 'TAIL');
    assert.ok(far.subarray(0, FAR_SPARSE_SIZE - 4).equals(Buffer.alloc(FAR_SPARSE_SIZE - 4)));
  });

  test(`${label}: listDir and stat`, async () => {
    const fs = await openImage(image());
    assert.deepEqual(
      await fs.listDir('/boot'),
      BOOT_NAMES.map((name) => ({
        name,
        type: name === 'grub' ? 'dir' : name === 'vmlinuz' ? 'symlink' : 'file',
      })),
    );
    assert.deepEqual(await fs.listDir('/boot/'), await fs.listDir('/boot'));
    const root = await fs.listDir('/');
    assert.deepEqual(
      root?.map((e) => e.name),
      ['boot', 'empty', 'etc', 'lib', 'lost+found', 'many', 'usr', 'var'],
    );
    assert.equal(root?.find((e) => e.name === 'lib')?.type, 'symlink');
    assert.deepEqual(await fs.listDir('/empty'), []);
    assert.deepEqual(
      (await fs.listDir('/lib'))?.map((e) => e.name),
      ['d'.repeat(70), 'os-release'],
    );
    assert.deepEqual(await fs.stat('/etc/os-release'), { type: 'symlink', size: '../usr/lib/os-release'.length });
    assert.deepEqual(await fs.stat('/etc/long-link'), { type: 'symlink', size: LONG_TARGET.length });
    assert.deepEqual(await fs.stat('/etc/hostname'), { type: 'file', size: 9 });
    assert.equal((await fs.stat('/lib'))?.type, 'symlink');
    assert.equal((await fs.stat('/lib/'))?.type, 'dir');
    assert.equal((await fs.stat('/etc'))?.type, 'dir');
    assert.equal((await fs.stat('/'))?.type, 'dir');
    assert.equal(await fs.stat('/etc/missing'), null);
  });

  test(`${label}: a folder of ${MANY_FILES} files lists completely`, async () => {
    const fs = await openImage(image());
    const many = await fs.listDir('/many');
    assert.equal(many?.length, MANY_FILES);
    assert.deepEqual(
      many.map((e) => e.name),
      Array.from({ length: MANY_FILES }, (_, i) => manyName(i)),
    );
    assert.ok(many.every((e) => e.type === 'file'));
  });

  test(`${label}: a symlink loop stops with FILESYSTEM_UNREADABLE`, async () => {
    const fs = await openImage(image());
    await assertUnreadable(fs.readFile('/etc/loop-a'), /more than 16 symbolic links/);
    assert.equal((await fs.stat('/etc/loop-a'))?.type, 'symlink');
  });
}

test('the fixtures exercise what they claim: htree folders, a deep extent tree, meta groups beyond the first', () => {
  const INDEX_FL = 0x1000;
  assert.ok((inodeFlags(ext4Image, '/many') & INDEX_FL) !== 0, 'ext4 /many is htree');
  assert.ok((inodeFlags(ext3Image, '/many') & INDEX_FL) !== 0, 'ext3 /many is htree');
  assert.match(run('debugfs', ['-R', 'ex /var/islands.bin', ext4Image]), /^ 1\/ 1 /m);
  assert.match(run('debugfs', ['-R', 'stat /var/far-sparse.img', ext3Image]), /\(TIND\)/);
  // 32-byte descriptors, 1 KiB blocks: 32 groups per meta group; these inodes live in the second.
  assert.ok(inodeGroup(metaBgImage, `/many/${manyName(1999)}`) >= 32);
});

test('ext4 inline_data: tiny files and folders stored inside the inode', async () => {
  const fs = await openImage(inlineImage);
  assert.ok(fs.info.features.includes('inline_data'));
  assert.ok((inodeFlags(inlineImage, '/etc/hostname') & 0x10000000) !== 0, 'fixture: hostname is inline');
  assert.equal((await fs.readFile('/etc/hostname'))?.toString(), 'inline-host\n');
  assert.equal((await fs.readFile('/etc/motd'))?.toString(), 'M'.repeat(100));
  assert.deepEqual(await fs.listDir('/etc/tiny-dir'), [
    { name: 'a', type: 'file' },
    { name: 'b', type: 'file' },
    { name: 'host-link', type: 'symlink' },
  ]);
  assert.equal((await fs.readFile('/etc/tiny-dir/host-link'))?.toString(), 'inline-host\n');
  assert.equal((await fs.readFile('/etc/tiny-dir/../tiny-dir/a'))?.toString(), 'a');
});

// ---------------------------------------------------------------------------------------------
// Damage and cost

test('a corrupted extent header is reported, not read as garbage', async () => {
  const image = Buffer.from(await readFile(ext4Image));
  const inodeAt = inodeByteOffset(ext4Image, '/etc/hostname', 4096);
  assert.equal(image.readUInt16LE(inodeAt + 0x28), 0xf30a);
  image.writeUInt16LE(0x1234, inodeAt + 0x28);
  const fs = await Ext4Reader.open(bufferReader(image));
  await assertUnreadable(fs.readFile('/etc/hostname'), /extent header magic 0x1234/);
  assert.equal((await fs.readFile('/etc/redhat-release'))?.toString(), REDHAT_RELEASE);

  const deep = Buffer.from(await readFile(ext4Image));
  deep.writeUInt16LE(9, inodeAt + 0x28 + 6); // depth 9
  await assertUnreadable((await Ext4Reader.open(bufferReader(deep))).readFile('/etc/hostname'), /depth 9/);

  const outside = Buffer.from(await readFile(ext4Image));
  outside.writeUInt32LE(0xfffffff0, inodeAt + 0x28 + 12 + 8); // the first extent's physical start
  await assertUnreadable(
    (await Ext4Reader.open(bufferReader(outside))).readFile('/etc/hostname'),
    /outside the filesystem/,
  );
});

test('unwritten (preallocated) extents read as zeros whatever their blocks hold', async () => {
  const image = join(work, 'prealloc.img');
  await writeFile(image, await readFile(ext4Image));
  run('debugfs', ['-w', '-R', 'write /dev/null /prealloc', image]);
  run('debugfs', ['-w', '-R', 'fallocate /prealloc 0 2', image]);
  run('debugfs', ['-w', '-R', 'sif /prealloc size 12288', image]);
  assert.match(run('debugfs', ['-R', 'ex /prealloc', image]), /Uninit/);
  const bytes = await readFile(image);
  for (const block of run('debugfs', ['-R', 'blocks /prealloc', image]).trim().split(/\s+/).map(Number)) {
    bytes.fill(0xaa, block * 4096, (block + 1) * 4096);
  }
  const fs = await Ext4Reader.open(bufferReader(bytes));
  assert.deepEqual(await fs.readFile('/prealloc'), Buffer.alloc(12288));
});

test('a corrupted directory entry is reported with where it is', async () => {
  const image = Buffer.from(await readFile(ext3Image));
  const blocks = run('debugfs', ['-R', 'blocks /boot', ext3Image]).trim().split(/\s+/).map(Number);
  const first = blocks[0];
  assert.ok(first !== undefined && first > 0);
  image.writeUInt16LE(3, first * 1024 + 4); // rec_len of '.' no longer a multiple of 4
  const fs = await Ext4Reader.open(bufferReader(image));
  await assertUnreadable(fs.listDir('/boot'), /directory inode \d+ .*record length 3/);
});

test('opening and reading a file touches a handful of blocks, and repeats come from the cache', async () => {
  const reader = await fileReader(ext4Image);
  const fs = await Ext4Reader.open(reader);
  assert.equal((await fs.readFile('/etc/os-release'))?.toString(), OS_RELEASE);
  assert.ok(reader.reads <= 12, `${reader.reads} reads`);
  assert.ok(reader.bytes <= 12 * 4096, `${reader.bytes} bytes read`);
  const before = reader.reads;
  assert.equal((await fs.readFile('/etc/os-release'))?.toString(), OS_RELEASE);
  assert.equal(reader.reads - before, 1, 'only the file data is read again');
  await fs.listDir('/etc');
  assert.equal(reader.reads - before, 1, '/etc was cached');
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listTarMembers, writeTar, type TarMember } from '../../../src/convert/ova-archive.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

/*
 * Offsets are the point: QEMU reads a disk inside the OVA at the offset listTarMembers gives,
 * so every test reads the bytes there and compares them with the file that went in. Archives
 * come from writeTar and from GNU tar in its ustar, gnu and posix (pax) formats.
 */

let dir = '';
const content = new Map<string, Buffer>(); // relative path in `src` -> bytes
const src = (...p: string[]): string => join(dir, 'src', ...p);
const LONG = `${'a'.repeat(140)}-disk1.vmdk`; // > 100 bytes: a GNU 'L' or pax 'path' record
const DEEP = `${'d'.repeat(60)}/${'e'.repeat(60)}/deep.vmdk`; // > 100 bytes in all, fits ustar's prefix + name

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-ova-test-'));
  await mkdir(src('sub'), { recursive: true });
  await mkdir(src(DEEP, '..'), { recursive: true });
  const files: [string, Buffer][] = [
    ['vm.ovf', Buffer.from('<?xml version="1.0"?><Envelope/>\n')],
    ['vm.mf', Buffer.alloc(0)],
    ['exact.bin', randomBytes(512)],
    ['sub/disk.vmdk', randomBytes(1024 * 1024 + 123)],
    [LONG, randomBytes(3000)],
    [DEEP, randomBytes(777)],
  ];
  for (const [name, data] of files) {
    content.set(name, data);
    await writeFile(src(name), data);
  }
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function bytesAt(archive: string, m: TarMember): Promise<Buffer> {
  const fh = await open(archive, 'r');
  try {
    const buf = Buffer.alloc(m.size);
    await fh.read(buf, 0, m.size, m.offset);
    return buf;
  } finally {
    await fh.close();
  }
}

/** Each member's bytes, read at its offset, are the file's. */
async function assertMembers(archive: string, expected: string[]): Promise<TarMember[]> {
  const members = await listTarMembers(archive);
  assert.deepEqual(
    members.map((m) => m.name),
    expected,
  );
  for (const m of members) {
    const want = content.get(m.name)!;
    assert.equal(m.size, want.length, m.name);
    assert.equal(m.offset % 512, 0);
    assert.ok((await bytesAt(archive, m)).equals(want), `bytes of ${m.name} at offset ${m.offset}`);
  }
  return members;
}

const gnuTar = (archive: string, format: string, names: string[], extra: string[] = []): void => {
  execFileSync('tar', [`--format=${format}`, ...extra, '-C', src(), '-cf', archive, ...names]);
};

const rejects = async (p: Promise<unknown>, code: string, message: RegExp): Promise<void> => {
  await assert.rejects(p, (e: unknown) => isMamoriError(e) && e.code === code && message.test(e.message));
};

test('writeTar writes a ustar archive in the given order that GNU tar reads and listTarMembers locates', async () => {
  const archive = join(dir, 'out.ova');
  const names = ['vm.ovf', 'vm.mf', 'exact.bin', 'sub/disk.vmdk'];
  await writeTar(
    archive,
    names.map((name) => ({ name, source: src(name) })),
  );
  const members = await assertMembers(archive, names);
  // header + data padded to 512 per member, then two zero blocks
  const expectedSize = names.reduce((n, name) => n + 512 + Math.ceil(content.get(name)!.length / 512) * 512, 0) + 1024;
  assert.equal((await stat(archive)).size, expectedSize);
  assert.equal(members[0]!.offset, 512);

  const listing = execFileSync('tar', ['-tvf', archive], { encoding: 'utf8' }).trim().split('\n');
  assert.deepEqual(
    listing.map((l) => l.split(/\s+/).at(-1)),
    names,
  );
  for (const [i, line] of listing.entries()) {
    assert.match(line, /^-rw-r--r-- root\/root\s+(\d+) /);
    assert.equal(Number(/root\/root\s+(\d+)/.exec(line)![1]), content.get(names[i]!)!.length);
  }
  const extracted = execFileSync('tar', ['-xOf', archive, 'sub/disk.vmdk'], { maxBuffer: 4 * 1024 * 1024 });
  assert.ok(extracted.equals(content.get('sub/disk.vmdk')!));
  const head = await readFile(archive);
  assert.equal(head.subarray(257, 265).toString('latin1'), 'ustar\u000000');
});

test('GNU tar --format=ustar: directories skipped, "./" dropped, long paths split into prefix and name', async () => {
  const archive = join(dir, 'ustar.tar');
  gnuTar(archive, 'ustar', ['./vm.ovf', 'sub', DEEP, 'exact.bin']);
  await assertMembers(archive, ['vm.ovf', 'sub/disk.vmdk', DEEP, 'exact.bin']);
});

test('GNU tar --format=gnu: a long name (GNU L header)', async () => {
  const archive = join(dir, 'gnu.tar');
  gnuTar(archive, 'gnu', ['vm.ovf', LONG, './sub/disk.vmdk']);
  assert.ok((await readFile(archive)).includes('././@LongLink'), 'the archive really has an L header');
  await assertMembers(archive, ['vm.ovf', LONG, 'sub/disk.vmdk']);
});

test('GNU tar --format=posix: pax x headers with path=, a global g header ignored', async () => {
  const archive = join(dir, 'pax.tar');
  gnuTar(archive, 'posix', ['./vm.ovf', LONG, 'sub', 'vm.mf'], ['--pax-option=comment=made for a test']);
  const raw = await readFile(archive);
  assert.equal(String.fromCharCode(raw[156]!), 'g', 'the archive starts with a global header');
  await assertMembers(archive, ['vm.ovf', LONG, 'sub/disk.vmdk', 'vm.mf']);
});

test('a size in GNU base-256 form (as for members of 8 GiB and more) is read', async () => {
  const archive = join(dir, 'b256.tar');
  await writeTar(archive, [
    { name: 'vm.ovf', source: src('vm.ovf') },
    { name: 'sub/disk.vmdk', source: src('sub/disk.vmdk') },
  ]);
  const raw = await readFile(archive);
  const h = (await listTarMembers(archive))[1]!.offset - 512;
  const size = content.get('sub/disk.vmdk')!.length;
  raw.fill(0, h + 124, h + 136);
  raw[h + 124] = 0x80;
  raw.writeUIntBE(size, h + 130, 6);
  raw.fill(0x20, h + 148, h + 156);
  let sum = 0;
  for (let i = h; i < h + 512; i++) sum += raw[i]!;
  raw.write(`${sum.toString(8).padStart(6, '0')}\0 `, h + 148, 'latin1');
  await writeFile(archive, raw);
  await assertMembers(archive, ['vm.ovf', 'sub/disk.vmdk']);
  assert.match(execFileSync('tar', ['-tvf', archive], { encoding: 'utf8' }), new RegExp(` ${size} .*sub/disk\\.vmdk`));
});

test('damaged and truncated archives are refused with the offset', async () => {
  const notTar = join(dir, 'random.ova');
  await writeFile(notTar, randomBytes(4096));
  await rejects(listTarMembers(notTar), 'IMAGE_CORRUPT', /not a tar archive \(an OVA is one\)/);
  const empty = join(dir, 'empty.ova');
  await writeFile(empty, Buffer.alloc(0));
  await rejects(listTarMembers(empty), 'IMAGE_CORRUPT', /not a tar archive/);

  const good = join(dir, 'good.ova');
  await writeTar(good, [
    { name: 'vm.ovf', source: src('vm.ovf') },
    { name: 'sub/disk.vmdk', source: src('sub/disk.vmdk') },
  ]);
  const raw = await readFile(good);
  const second = (await listTarMembers(good))[1]!.offset - 512;

  const cut = join(dir, 'cut.ova');
  await writeFile(cut, raw.subarray(0, second + 512 + 4096)); // the disk's data runs past the end
  await rejects(listTarMembers(cut), 'IMAGE_CORRUPT', new RegExp(`truncated: a member at offset ${second} `));

  const damaged = join(dir, 'damaged.ova');
  const copy = Buffer.from(raw);
  copy[second + 10] = copy[second + 10]! ^ 0xff; // a flipped byte in the second header's name
  await writeFile(damaged, copy);
  await rejects(listTarMembers(damaged), 'IMAGE_CORRUPT', new RegExp(`truncated or damaged at offset ${second};`));
});

test('writeTar refuses names ustar cannot hold and sources it cannot read, leaving no file', async () => {
  const archive = join(dir, 'refused.ova');
  await rejects(writeTar(archive, [{ name: LONG, source: src(LONG) }]), 'INVALID_INPUT', /1 to 100 bytes/);
  await rejects(
    writeTar(archive, [{ name: 'x.vmdk', source: src('missing.vmdk') }]),
    'INVALID_INPUT',
    /cannot read .*missing\.vmdk/,
  );
  await rejects(writeTar(archive, [{ name: 'sub', source: src('sub') }]), 'INVALID_INPUT', /not a regular file/);
  await rejects(
    writeTar(archive, [
      { name: 'a', source: src('vm.ovf') },
      { name: 'a', source: src('vm.mf') },
    ]),
    'INVALID_INPUT',
    /two members are named a/,
  );
  assert.equal(existsSync(archive), false);
});

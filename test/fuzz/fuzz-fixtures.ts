import { mkdir, mkdtemp, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../src/core/run-process.js';
import { writeTar } from '../../src/convert/ova-archive.js';
import { emptyHive } from '../harness/empty-hive.js';

/**
 * Real inputs for the fuzz targets, made with Debian's tools as shared/notes/fixtures.md
 * describes (mkfs.ext4 -d, mkfs.fat + mtools, mkntfs + wimlib, sfdisk, hivexregedit, tar),
 * small (a few MiB each), built once per process in a temporary folder that is removed at
 * once: the images are kept in memory.
 */
const MiB = 1024 * 1024;
const TOOL_ENV = {
  ...process.env,
  PATH: `/usr/sbin:/sbin:${process.env['PATH'] ?? '/usr/bin:/bin'}`,
  MTOOLS_SKIP_CHECK: '1',
};

async function run(cmd: string, args: string[], input?: string): Promise<void> {
  await runProcess(cmd, args, { timeoutMs: 120_000, env: TOOL_ENV, ...(input !== undefined ? { input } : {}) });
}

async function tree(
  root: string,
  files: Record<string, string | Buffer>,
  links: Record<string, string> = {},
): Promise<string> {
  for (const [p, data] of Object.entries(files)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), data);
  }
  for (const [p, target] of Object.entries(links)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await symlink(target, join(root, p));
  }
  return root;
}

async function blank(path: string, bytes: number): Promise<string> {
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-fuzz-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A Linux root: os-release through a relative symlink, kernels, a folder big enough for an htree, a file spanning many blocks. */
function linuxTree(): { files: Record<string, string>; links: Record<string, string> } {
  const files: Record<string, string> = {
    'usr/lib/os-release':
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
    'etc/redhat-release': 'Red Hat Enterprise Linux Server release 6.10 (Santiago)\n',
    'etc/hostname': 'fuzz-guest\n',
    'etc/fstab': 'UUID=x / ext4 defaults 0 1\n',
    'boot/vmlinuz-6.1.0-18-amd64': 'not a kernel',
    'boot/grub/grub.cfg': 'set default=0\n',
    'var/big.bin': 'x'.repeat(70 * 1024),
  };
  for (let i = 0; i < 120; i++) files[`etc/many/file-with-a-longer-name-${i}.conf`] = `${i}\n`;
  return {
    files,
    links: { 'etc/os-release': '../usr/lib/os-release', 'etc/long-link': `../${'d/'.repeat(40)}target` },
  };
}

export interface NamedImage {
  name: string;
  image: Buffer;
}

let ext4: Promise<NamedImage[]> | undefined;
/** ext4 with 1 KiB blocks (extents, htree), ext2 (block maps), ext4 with 4 KiB blocks and inline data. */
export function ext4Images(): Promise<NamedImage[]> {
  ext4 ??= withDir(async (dir) => {
    const { files, links } = linuxTree();
    const root = await tree(join(dir, 'root'), files, links);
    const out: NamedImage[] = [];
    for (const [name, args, bytes] of [
      ['ext4-1k', ['-t', 'ext4', '-b', '1024', '-O', '^has_journal'], 4 * MiB],
      ['ext2', ['-t', 'ext2', '-b', '1024'], 4 * MiB],
      ['ext4-4k-inline', ['-t', 'ext4', '-b', '4096', '-O', 'inline_data,^has_journal', '-I', '256'], 6 * MiB],
    ] as const) {
      const img = await blank(join(dir, `${name}.img`), bytes);
      await run('mke2fs', [
        '-q',
        '-F',
        ...args,
        '-L',
        'root',
        '-U',
        '0b5e7f4c-1d2e-4f3a-9b8c-7d6e5f4a3b2c',
        '-E',
        'root_owner=0:0',
        '-d',
        root,
        img,
      ]);
      out.push({ name, image: await readFile(img) });
    }
    return out;
  });
  return ext4;
}

let fat: Promise<NamedImage[]> | undefined;
/** FAT12, FAT16 and FAT32 ESPs with /EFI/BOOT/BOOTX64.EFI, long names and a folder of many entries. */
export function fatImages(): Promise<NamedImage[]> {
  fat ??= withDir(async (dir) => {
    const efi = join(dir, 'BOOTX64.EFI');
    await writeFile(efi, Buffer.alloc(9000, 0x4d));
    const small = join(dir, 'note.txt');
    await writeFile(small, 'a file with a long name\n');
    const out: NamedImage[] = [];
    for (const [name, bits, bytes] of [
      ['fat12', '12', 1 * MiB],
      ['fat16', '16', 8 * MiB],
      ['fat32', '32', 34 * MiB],
    ] as const) {
      const img = await blank(join(dir, `${name}.img`), bytes);
      await run('mkfs.fat', ['-F', bits, '-n', 'ESP', '-i', '1234ABCD', ...(bits === '12' ? [] : ['-s', '1']), img]);
      await run('mmd', ['-i', img, '::/EFI', '::/EFI/BOOT', '::/EFI/debian', '::/many']);
      await run('mcopy', ['-i', img, efi, '::/EFI/BOOT/BOOTX64.EFI']);
      await run('mcopy', ['-i', img, efi, '::/EFI/debian/grubx64.efi']);
      await run('mcopy', ['-i', img, small, '::/EFI/A Long File Name For Testing.txt']);
      for (let i = 0; i < 20; i++) await run('mcopy', ['-i', img, small, `::/many/entry-${i}.txt`]);
      out.push({ name, image: await readFile(img) });
    }
    return out;
  });
  return fat;
}

/** .reg text merged into an empty hive by hivexregedit (Debian libwin-hivex-perl). */
async function hive(dir: string, name: 'SOFTWARE' | 'SYSTEM', keys: Record<string, string[]>): Promise<Buffer> {
  const path = join(dir, name);
  await writeFile(path, emptyHive());
  const lines = ['Windows Registry Editor Version 5.00', ''];
  const seen = new Set<string>();
  for (const [key, values] of Object.entries(keys)) {
    const parts = key.split('\\');
    for (let i = 1; i <= parts.length; i++) {
      const k = parts.slice(0, i).join('\\');
      if (seen.has(k)) continue;
      seen.add(k);
      lines.push(`[HKEY_LOCAL_MACHINE\\${name}\\${k}]`, ...(i === parts.length ? values : []), '');
    }
  }
  const reg = join(dir, `${name}.reg`);
  await writeFile(reg, lines.join('\n'));
  await run('hivexregedit', ['--merge', path, '--prefix', `HKEY_LOCAL_MACHINE\\${name}`, reg]);
  await rm(reg);
  return readFile(path);
}

let hives: Promise<{ software: Buffer; system: Buffer }> | undefined;
/** SOFTWARE and SYSTEM of a Windows Server 2012 R2 with virtio drivers: what windowsRelease reads. */
export function windowsHives(): Promise<{ software: Buffer; system: Buffer }> {
  hives ??= withDir(async (dir) => {
    const software = await hive(dir, 'SOFTWARE', {
      'Microsoft\\Windows NT\\CurrentVersion': [
        '"ProductName"="Windows Server 2012 R2 Standard"',
        '"CurrentVersion"="6.3"',
        '"CurrentBuildNumber"="9600"',
        '"InstallationType"="Server"',
        '"EditionID"="ServerStandard"',
        '"CurrentMajorVersionNumber"=dword:0000000a',
        '"Blob"=hex:01,02,03,04,05,06,07,08,09',
        '"Multi"=hex(7):61,00,00,00,62,00,00,00,00,00',
      ],
    });
    const services = ['Tcpip', 'disk', 'viostor', 'netkvm', ...Array.from({ length: 30 }, (_, i) => `Svc${i}`)];
    const system = await hive(dir, 'SYSTEM', {
      Select: ['"Current"=dword:00000001'],
      'ControlSet001\\Control\\ComputerName\\ComputerName': ['"ComputerName"="WIN2012R2"'],
      ...Object.fromEntries(services.map((s) => [`ControlSet001\\Services\\${s}`, ['"Start"=dword:00000000']])),
    });
    return { software, system };
  });
  return hives;
}

let ntfs: Promise<NamedImage[]> | undefined;
/** An NTFS volume holding a Windows tree (both hives under Windows/System32/config) and a folder of many files. */
export function ntfsImages(): Promise<NamedImage[]> {
  ntfs ??= withDir(async (dir) => {
    const { software, system } = await windowsHives();
    const files: Record<string, string | Buffer> = {
      'Windows/System32/config/SOFTWARE': software,
      'Windows/System32/config/SYSTEM': system,
      'Windows/System32/ntoskrnl.exe': 'MZ not a kernel',
      'Program Files/Common Files/readme.txt': 'hello\n',
    };
    for (let i = 0; i < 60; i++) files[`Users/Public/Document number ${i}.txt`] = `${i}\n`;
    const root = await tree(join(dir, 'win'), files);
    const wim = join(dir, 't.wim');
    await run('wimlib-imagex', ['capture', root, wim, '--no-acls']);
    const sectors = 12 * 2048;
    const part = await blank(join(dir, 'part.ntfs'), sectors * 512);
    await run('mkntfs', ['-q', '-F', '-Q', '-L', 'Windows', '-p', '2048', part, String(sectors)]);
    await run('wimlib-imagex', ['apply', wim, '1', part]);
    return [{ name: 'ntfs-windows', image: await readFile(part) }];
  });
  return ntfs;
}

let disks: Promise<NamedImage[]> | undefined;
/** Partition tables: GPT (ESP, BIOS boot, Linux) and MBR with an extended partition and logical ones, on 4 MiB disks. */
export function partitionedDisks(): Promise<NamedImage[]> {
  disks ??= withDir(async (dir) => {
    const out: NamedImage[] = [];
    const gpt = await blank(join(dir, 'gpt.img'), 4 * MiB);
    await run(
      'sfdisk',
      ['-q', gpt],
      'label: gpt\nlabel-id: 8E5A7E1C-4C30-4E7E-9C0B-0123456789AB\n' +
        'start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"\n' +
        'start=4096, size=1024, type=21686148-6449-6E6F-744E-656564454649, name="bios"\n' +
        'start=5120, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"\n',
    );
    out.push({ name: 'gpt', image: await readFile(gpt) });
    const mbr = await blank(join(dir, 'mbr.img'), 4 * MiB);
    await run(
      'sfdisk',
      ['-q', mbr],
      [
        'label: dos',
        'label-id: 0x31323334',
        'start=64, size=2048, type=83, bootable',
        'start=2112, size=1024, type=82',
        'start=3136, type=5',
        'start=3200, size=1024, type=83',
        'start=4288, size=1024, type=7',
        'start=5376, type=8e',
      ].join('\n') + '\n',
    );
    out.push({ name: 'mbr-extended', image: await readFile(mbr) });
    return out;
  });
  return disks;
}

/** LVM2 metadata text as lvcreate 2.03 writes it: two PVs, linear (two segments), striped, mirror and thin LVs. */
export const LVM_TEXT = `vg0 {
id = "O0ZjVR-i1Kj-EXKL-hgY1-DdvK-7kkD-N2iSGZ"
seqno = 4
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8
max_lv = 0
max_pv = 0
metadata_copies = 0
physical_volumes {
pv0 {
id = "g5q5WA-KQqY-oGOd-0D29-ob2G-ngDL-jQBVcU"
device = "/dev/sda2"
status = ["ALLOCATABLE"]
flags = []
dev_size = 8192
pe_start = 2048
pe_count = 600
}
}
logical_volumes {
root {
id = "1JIkJY-Dxfy-8wC6-76no-ve5N-VZp0-7sp8LE"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
creation_time = 1700000000
segment_count = 2
segment2 {
start_extent = 512
extent_count = 2
type = "striped"
stripe_count = 1
stripes = [
"pv0", 520
]
}
segment1 {
start_extent = 0
extent_count = 512
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}
}
striped {
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 2
type = "striped"
stripe_count = 2
stripe_size = 128
stripes = [
"pv0", 530,
"pv1", 0
]
}
}
thin {
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 1
type = "thin"
}
}
}
}
# Generated by LVM2 version 2.03.16(2) (2022-05-18): Sat Dec  5 16:00:00 2026
contents = "Text Format Volume Group"
version = 1
description = "Created *after* executing 'lvcreate -n \\"root\\" vg0'"
creation_host = "fuzz"
creation_time = 1700000000
`;

let pv: Promise<NamedImage[]> | undefined;
/**
 * An LVM2 physical volume laid out as pvcreate does (label in sector 1, one metadata area at
 * 4 KiB, data from 1 MiB), its metadata copy wrapping around the area's end, and lv "root"
 * (2 MiB of extents from the data area) holding the ext2 image: what findLogicalVolumes reads.
 */
export function lvmPhysicalVolumes(): Promise<NamedImage[]> {
  pv ??= (async () => {
    const root = (await ext4Images()).find((i) => i.name === 'ext2')!.image.subarray(0, 2 * MiB);
    const image = Buffer.alloc(MiB + 600 * 4096);
    const label = 512;
    image.write('LABELONE', label, 'latin1');
    image.write('LVM2 001', label + 24, 'latin1');
    image.writeUInt32LE(32, label + 20);
    const pvh = label + 32;
    image.write('g5q5WAKQqYoGOd0D29ob2GngDLjQBVcU', pvh, 'latin1');
    image.writeBigUInt64LE(BigInt(MiB), pvh + 40);
    image.writeBigUInt64LE(4096n, pvh + 72);
    image.writeBigUInt64LE(BigInt(MiB - 4096), pvh + 80);
    const mda = 4096;
    const size = MiB - 4096;
    image.write(' LVM2 x[5A%r0N*>', mda + 4, 'latin1');
    const text = Buffer.from(LVM_TEXT);
    const offset = size - 300;
    image.writeBigUInt64LE(BigInt(offset), mda + 40);
    image.writeBigUInt64LE(BigInt(text.length), mda + 48);
    text.copy(image, mda + offset, 0, 300);
    text.copy(image, mda + 512, 300);
    root.copy(image, MiB);
    return [{ name: 'lvm-pv', image }];
  })();
  return pv;
}

let tars: Promise<NamedImage[]> | undefined;
/** OVAs: ours (ustar, writeTar), GNU tar with a long name ('L' records), pax with a long name and a big size field. */
export function tarArchives(): Promise<NamedImage[]> {
  tars ??= withDir(async (dir) => {
    const ovf = join(dir, 'vm.ovf');
    await writeFile(ovf, '<?xml version="1.0"?><Envelope/>\n');
    const disk = join(dir, 'vm-disk1.vmdk');
    await writeFile(disk, Buffer.alloc(1500, 0x4b));
    const out: NamedImage[] = [];
    const ours = join(dir, 'ours.ova');
    await writeTar(ours, [
      { name: 'vm.ovf', source: ovf },
      { name: 'vm-disk1.vmdk', source: disk },
    ]);
    out.push({ name: 'ustar', image: await readFile(ours) });
    const long = `${'a-long-folder-name/'.repeat(7)}disk.vmdk`;
    await mkdir(join(dir, 'src', long, '..'), { recursive: true });
    await writeFile(join(dir, 'src', 'vm.ovf'), 'x');
    await writeFile(join(dir, 'src', long), Buffer.alloc(700, 1));
    for (const format of ['gnu', 'pax'] as const) {
      const path = join(dir, `${format}.ova`);
      await run('tar', ['-C', join(dir, 'src'), `--format=${format}`, '-cf', path, 'vm.ovf', long]);
      out.push({ name: format, image: await readFile(path) });
    }
    return out;
  });
  return tars;
}

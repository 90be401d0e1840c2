import { mkdir, open, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../src/core/run-process.js';
import { emptyHive } from './empty-hive.js';

/**
 * Disk fixtures for inspection and conversion, built at test time with Debian's tools as
 * shared/notes/fixtures.md describes (sfdisk, mkfs.fat + mtools, mkfs.ext4 -d, mkswap,
 * cryptsetup, qemu-img): plain file operations, no mounts, nothing committed.
 */
const MiB = 1024 * 1024;
const ESP_START = 1 * MiB;
const ESP_SIZE = 64 * MiB;
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

async function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv, input?: string): Promise<void> {
  await runProcess(cmd, args, {
    timeoutMs: 120_000,
    ...(env ? { env: { ...process.env, ...env } } : {}),
    ...(input !== undefined ? { input } : {}),
  });
}

/** Writes `src` into `disk` at byte `offset` without touching the rest. */
async function place(disk: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(disk, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

async function tree(root: string, files: Record<string, string>, links: Record<string, string> = {}): Promise<void> {
  for (const [p, text] of Object.entries(files)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), text);
  }
  for (const [p, target] of Object.entries(links)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await symlink(target, join(root, p));
  }
}

/** Fixed UUIDs per label, so reports compare exactly. */
export const EXT4_UUIDS: Record<string, string> = {
  root: '0b5e7f4c-1d2e-4f3a-9b8c-7d6e5f4a3b2c',
  'rhel6-root': '6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
  data: 'da7a0000-1111-4222-8333-444455556666',
  boot: 'b0070000-aaaa-4bbb-8ccc-dddddddddddd',
  'lvm-boot': 'b0070000-1717-4bbb-8ccc-000000000006',
  'lvm-root': '5007f000-1717-4aaa-8bbb-000000000006',
};

async function ext4At(disk: string, offset: number, sizeBytes: number, root: string, label: string): Promise<void> {
  await run('mkfs.ext4', [
    '-q',
    '-F',
    '-L',
    label,
    '-U',
    EXT4_UUIDS[label]!,
    '-d',
    root,
    '-E',
    `offset=${offset}`,
    disk,
    `${sizeBytes / 1024}k`,
  ]);
}

/**
 * CentOS 6's default layout: /boot on partition 1, the rest one LVM physical volume holding
 * vg_centos6 with lv_root (ext4, the root) and lv_swap. LVM's tools refuse plain files, so
 * they run on a loop device over the image, told to see only that device, to activate
 * nothing (there is no device-mapper here: --driverloaded n) and to keep no metadata
 * backups in /etc/lvm. The filesystems are then written where the volumes' extents lie.
 */
export async function lvmCentos6(dir: string): Promise<string> {
  const disk = join(dir, 'lvm-centos6.img');
  await truncate(await touch(disk), 128 * MiB);
  await run(
    'sfdisk',
    ['-q', disk],
    undefined,
    ['label: dos', 'label-id: 0x4c564d36', 'start=2048, size=65536, type=83, bootable', 'start=67584, type=8e'].join(
      '\n',
    ) + '\n',
  );
  const pvStart = 67584 * 512;
  const boot = join(dir, 'boot-lvm');
  await tree(boot, {
    'vmlinuz-2.6.32-754.el6.x86_64': 'not a kernel',
    'initramfs-2.6.32-754.el6.x86_64.img': 'not an initramfs',
    'grub/grub.conf': 'default=0\n',
  });
  await ext4At(disk, 2048 * 512, 65536 * 512, boot, 'lvm-boot');
  const layout = await lvmVolumes(disk, 'vg_centos6', [
    ['lv_root', 40],
    ['lv_swap', 8],
  ]);
  const root = join(dir, 'root-lvm');
  await tree(root, {
    'etc/redhat-release': 'CentOS release 6.10 (Final)\n',
    'etc/sysconfig/network': 'NETWORKING=yes\nHOSTNAME=centos6-lvm.example.com\n',
    'etc/fstab':
      '/dev/mapper/vg_centos6-lv_root / ext4 defaults 1 1\nUUID=b0070000-1717-4bbb-8ccc-000000000006 /boot ext4 defaults 1 2\n',
    'boot/.keep': '',
  });
  await ext4At(disk, pvStart + layout['lv_root']!, 40 * MiB, root, 'lvm-root');
  const swap = join(dir, 'lv.swap');
  await truncate(await touch(swap), 8 * MiB);
  await run('mkswap', ['-q', swap]);
  await place(disk, pvStart + layout['lv_swap']!, await readAll(swap));
  return disk;
}

/**
 * Makes an LVM PV on partition 2 of `disk`, a VG and linear LVs of the given MiB, and returns
 * each LV's byte offset inside the PV (pe_start plus its first extent).
 */
async function lvmVolumes(disk: string, vg: string, lvs: [string, number][]): Promise<Record<string, number>> {
  const loop = (
    await runProcess('losetup', ['--find', '--show', '--partscan', disk], { timeoutMs: 10_000 })
  ).stdout.trim();
  try {
    const pv = `${loop}p2`;
    await runProcess('partx', ['-a', loop], { timeoutMs: 10_000 }).catch(() => undefined);
    const config = `devices { filter=["a|^${pv}$|","r|.*|"] use_devicesfile=0 } backup { backup=0 archive=0 } activation { udev_sync=0 udev_rules=0 }`;
    const lvm = async (cmd: string, args: string[]): Promise<string> =>
      (
        await runProcess(cmd, ['--config', config, ...args], {
          timeoutMs: 60_000,
          env: { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1' },
        })
      ).stdout;
    await lvm('pvcreate', ['-q', pv]);
    await lvm('vgcreate', ['-q', vg, pv]);
    for (const [name, mib] of lvs)
      await lvm('lvcreate', ['-q', '--driverloaded', 'n', '-an', '-Zn', '-L', `${mib}M`, '-n', name, vg]);
    const peStart = Number(
      (
        await lvm('pvs', ['--driverloaded', 'n', '--noheadings', '--nosuffix', '--units', 'b', '-o', 'pe_start', pv])
      ).trim(),
    );
    const extent = Number(
      (
        await lvm('vgs', [
          '--driverloaded',
          'n',
          '--noheadings',
          '--nosuffix',
          '--units',
          'b',
          '-o',
          'vg_extent_size',
          vg,
        ])
      ).trim(),
    );
    const out: Record<string, number> = {};
    for (const line of (await lvm('lvs', ['--driverloaded', 'n', '--noheadings', '-o', 'lv_name,seg_pe_ranges', vg]))
      .trim()
      .split('\n')) {
      const m = /^\s*(\S+)\s+\S+:(\d+)-\d+\s*$/.exec(line);
      if (m) out[m[1]!] = peStart + Number(m[2]) * extent;
    }
    return out;
  } finally {
    await runProcess('losetup', ['-d', loop], { timeoutMs: 10_000 }).catch(() => undefined);
  }
}

/** A unified kernel image of the test guest: the systemd EFI stub with kernel, initrd and command line as sections. */
export async function buildUki(
  dir: string,
  guest: { kernel: string; initrd: string },
  cmdline: string,
): Promise<string> {
  const osrel = join(dir, 'uki-osrel');
  const cmd = join(dir, 'uki-cmdline');
  await writeFile(osrel, 'ID=mamori-test-guest\nNAME="mamori test guest"\n');
  await writeFile(cmd, cmdline);
  const out = join(dir, 'BOOTX64.EFI');
  await run('objcopy', [
    '--add-section',
    `.osrel=${osrel}`,
    '--change-section-vma',
    '.osrel=0x20000',
    '--add-section',
    `.cmdline=${cmd}`,
    '--change-section-vma',
    '.cmdline=0x30000',
    '--add-section',
    `.linux=${guest.kernel}`,
    '--change-section-vma',
    '.linux=0x2000000',
    '--add-section',
    `.initrd=${guest.initrd}`,
    '--change-section-vma',
    '.initrd=0x3000000',
    STUB,
    out,
  ]);
  return out;
}

/**
 * GPT: an EFI System Partition (FAT32, /EFI/BOOT/BOOTX64.EFI = `efiBinary`) and an ext4 root
 * holding a Debian 12 (os-release a relative symlink into /usr/lib, as Debian ships it).
 */
export function gptUefiDebian(dir: string, efiBinary: string): Promise<string> {
  return gptUefiDebianSized(dir, efiBinary, 160 * MiB);
}

/** The same layout on a disk of any size (the root takes the rest): sparse, so 20 GiB costs little. */
export async function gptUefiDebianSized(dir: string, efiBinary: string, sizeBytes: number): Promise<string> {
  const disk = join(dir, sizeBytes === 160 * MiB ? 'gpt-uefi.img' : `gpt-uefi-${sizeBytes}.img`);
  await truncate(await touch(disk), sizeBytes);
  await run(
    'sfdisk',
    ['-q', disk],
    undefined,
    `label: gpt\nlabel-id: 8E5A7E1C-4C30-4E7E-9C0B-0123456789AB\nstart=2048, size=${ESP_SIZE / 512}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"\n`,
  );
  // The ESP is made as its own file and placed: mtools' @@offset misreads FATs inside big images.
  const esp = join(dir, `esp-${sizeBytes}.img`);
  await truncate(await touch(esp), ESP_SIZE);
  await run('mkfs.fat', ['-F', '32', '-n', 'ESP', '-i', '1234ABCD', esp]);
  const mt = { MTOOLS_SKIP_CHECK: '1' };
  await run('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT', '::/EFI/debian'], mt);
  await run('mcopy', ['-i', esp, efiBinary, '::/EFI/BOOT/BOOTX64.EFI'], mt);
  // A second loader where distributions put theirs (systemd-boot's binary stands in for GRUB's).
  await run('mcopy', ['-i', esp, '/usr/lib/systemd/boot/efi/systemd-bootx64.efi', '::/EFI/debian/grubx64.efi'], mt);
  await place(disk, ESP_START, await readAll(esp));
  await rm(esp);
  const root = join(dir, 'root-debian');
  await tree(
    root,
    {
      'usr/lib/os-release':
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n',
      'etc/debian_version': '12.5\n',
      'etc/hostname': 'uefi-guest\n',
      'etc/fstab': 'UUID=x / ext4 defaults 0 1\n',
      'boot/vmlinuz-6.1.0-18-amd64': 'not a kernel',
      'boot/vmlinuz-6.1.0-17-amd64': 'not a kernel',
      'boot/config-6.1.0-18-amd64': '#',
    },
    { 'etc/os-release': '../usr/lib/os-release' },
  );
  const rootStart = ESP_START + ESP_SIZE;
  await ext4At(disk, rootStart, sizeBytes - rootStart - MiB, root, 'root');
  return disk;
}

/**
 * MBR: a bootable ext4 root holding RHEL 6.10 (only /etc/redhat-release, no os-release), swap,
 * and an extended partition with one logical ext4 data partition; GRUB legacy's stage1
 * strings in the MBR's boot code.
 */
export async function mbrRhel6(dir: string): Promise<string> {
  const disk = join(dir, 'mbr-rhel6.img');
  await truncate(await touch(disk), 128 * MiB);
  await run(
    'sfdisk',
    ['-q', disk],
    undefined,
    [
      'label: dos',
      'label-id: 0x31323334',
      'start=2048, size=131072, type=83, bootable', // 64 MiB root
      'start=133120, size=16384, type=82', //            8 MiB swap
      'start=149504, type=5', //                         extended, rest of the disk
      'start=151552, size=65536, type=83', //            logical 5: 32 MiB data
    ].join('\n') + '\n',
  );
  const root = join(dir, 'root-rhel6');
  await tree(root, {
    'etc/redhat-release': 'Red Hat Enterprise Linux Server release 6.10 (Santiago)\n',
    'etc/sysconfig/network': 'NETWORKING=yes\nHOSTNAME=rhel6.example.com\n',
    'etc/fstab': '/dev/sda1 / ext4 defaults 1 1\n',
    'boot/vmlinuz-2.6.32-754.el6.x86_64': 'not a kernel',
    'boot/grub/grub.conf': 'default=0\n',
  });
  await ext4At(disk, 2048 * 512, 131072 * 512, root, 'rhel6-root');
  const swap = join(dir, 'part.swap');
  await truncate(await touch(swap), 16384 * 512);
  await run('mkswap', ['-q', '-L', 'SWAP', '-U', '5f1d0a3e-9a7b-4c3d-8e2f-1a2b3c4d5e6f', swap]);
  await place(disk, 133120 * 512, await readAll(swap));
  const data = join(dir, 'root-data');
  await tree(data, { README: 'data\n' });
  await ext4At(disk, 151552 * 512, 65536 * 512, data, 'data');
  // GRUB legacy's stage1 carries these strings; the inspector names the boot code by them.
  const code = Buffer.alloc(440);
  code.set([0xeb, 0x48, 0x90]);
  code.write('GRUB \u0000Geom\u0000Hard Disk\u0000Read\u0000 Error\r\n', 0x179, 'latin1');
  await place(disk, 0, code);
  return disk;
}

/** A registry hive file: an empty hive with .reg text merged in by hivexregedit (Debian libwin-hivex-perl). */
async function hive(dir: string, name: 'SOFTWARE' | 'SYSTEM', reg: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, emptyHive());
  const regFile = join(dir, `${name}.reg`);
  await writeFile(regFile, `Windows Registry Editor Version 5.00\n\n${withParentKeys(reg)}`);
  await run('hivexregedit', ['--merge', path, '--prefix', `HKEY_LOCAL_MACHINE\\${name}`, regFile]);
  return path;
}

/** hivexregedit creates only the keys a section names: give every parent its own (empty) section first. */
function withParentKeys(reg: string): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const line of reg.split('\n')) {
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      const parts = m[1]!.split('\\');
      // HKEY_LOCAL_MACHINE\HIVE is the hive's root: parents start below it.
      for (let i = 3; i < parts.length; i++) {
        const parent = parts.slice(0, i).join('\\');
        if (!seen.has(parent)) out.push(`[${parent}]`, '');
        seen.add(parent);
      }
      seen.add(m[1]!);
    }
    out.push(line);
  }
  return out.join('\n');
}

/**
 * MBR: one bootable NTFS partition holding a Windows Server 2012 R2 system root (SOFTWARE and
 * SYSTEM hives, as libguestfs requires both) and Windows' MBR boot code strings. NTFS is
 * populated the way shared/notes/fixtures.md found to work: a WIM of the tree applied by wimlib.
 */
export async function mbrWindows2012(dir: string, opts: { virtio?: boolean } = {}): Promise<string> {
  const disk = join(dir, `mbr-win2012${opts.virtio ? '-virtio' : ''}.img`);
  const partSectors = 196608; // 96 MiB
  await truncate(await touch(disk), 100 * MiB);
  await run(
    'sfdisk',
    ['-q', disk],
    undefined,
    `label: dos\nlabel-id: 0x4e54f5a1\nstart=2048, size=${partSectors}, type=7, bootable\n`,
  );
  const tree = join(dir, `win-tree${opts.virtio ? '-virtio' : ''}`);
  const config = join(tree, 'Windows', 'System32', 'config');
  await mkdir(config, { recursive: true });
  await mkdir(join(tree, 'Program Files', 'Common Files'), { recursive: true });
  await writeFile(join(tree, 'Windows', 'System32', 'ntoskrnl.exe'), 'MZ not a kernel');
  await hive(
    config,
    'SOFTWARE',
    [
      '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]',
      '"ProductName"="Windows Server 2012 R2 Standard"',
      '"CurrentVersion"="6.3"',
      '"CurrentBuildNumber"="9600"',
      '"InstallationType"="Server"',
      '"EditionID"="ServerStandard"',
      '',
    ].join('\n'),
  );
  const services = ['Tcpip', 'disk', ...(opts.virtio ? ['viostor', 'netkvm'] : [])];
  await hive(
    config,
    'SYSTEM',
    [
      '[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]',
      '"Current"=dword:00000001',
      '',
      '[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\ComputerName\\ComputerName]',
      '"ComputerName"="WIN2012R2"',
      '',
      ...services.flatMap((s) => [
        `[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\${s}]`,
        '"Start"=dword:00000000',
        '',
      ]),
    ].join('\n'),
  );
  // The hive's .reg leftovers are not part of a Windows tree.
  await rm(join(config, 'SOFTWARE.reg'));
  await rm(join(config, 'SYSTEM.reg'));
  const wim = join(dir, `win${opts.virtio ? '-virtio' : ''}.wim`);
  await run('wimlib-imagex', ['capture', tree, wim, '--no-acls']);
  const part = join(dir, `part${opts.virtio ? '-virtio' : ''}.ntfs`);
  await truncate(await touch(part), partSectors * 512);
  await run('mkntfs', ['-q', '-F', '-Q', '-L', 'Windows', '-p', '2048', part, String(partSectors)]);
  await run('wimlib-imagex', ['apply', wim, '1', part]);
  await place(disk, 2048 * 512, await readAll(part));
  await rm(part);
  const code = Buffer.alloc(440);
  code.set([0x33, 0xc0, 0x8e, 0xd0]);
  code.write(
    'Invalid partition table\u0000Error loading operating system\u0000Missing operating system\u0000',
    0x163,
    'latin1',
  );
  await place(disk, 0, code);
  return disk;
}

/** A GPT disk whose second partition is LUKS2 (a throwaway passphrase, cheap key derivation). */
export async function gptLuks(dir: string): Promise<string> {
  const disk = join(dir, 'gpt-luks.img');
  await truncate(await touch(disk), 64 * MiB);
  await run(
    'sfdisk',
    ['-q', disk],
    undefined,
    'label: gpt\nstart=2048, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"\nstart=18432, type=CA7D7CCB-63ED-4C53-861C-1742536059CC, name="crypt"\n',
  );
  await ext4At(disk, 2048 * 512, 16384 * 512, await emptyDir(join(dir, 'empty-boot')), 'boot');
  const part = join(dir, 'part.luks');
  await truncate(await touch(part), 32 * MiB);
  await run(
    'cryptsetup',
    [
      'luksFormat',
      '-q',
      '--type',
      'luks2',
      '--pbkdf',
      'pbkdf2',
      '--pbkdf-force-iterations',
      '1000',
      '--label',
      'secret',
      '--key-file',
      '-',
      part,
    ],
    undefined,
    'fixture-passphrase',
  );
  await place(disk, 18432 * 512, (await readAll(part)).subarray(0, 32 * MiB));
  return disk;
}

/** A copy whose primary GPT header is damaged (one byte of its disk GUID flipped: the CRC no longer matches). */
export async function corruptPrimaryGpt(src: string, dest: string): Promise<string> {
  await run('cp', ['--sparse=always', src, dest]);
  const fh = await open(dest, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 512 + 56);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, 512 + 56);
  } finally {
    await fh.close();
  }
  return dest;
}

/** The same disk in another container (vmdk monolithicSparse or streamOptimized, vhdx, qcow2). */
export async function convertTo(
  src: string,
  dest: string,
  format: 'vmdk' | 'vhdx' | 'qcow2',
  subformat?: string,
): Promise<string> {
  await run('qemu-img', [
    'convert',
    '-f',
    'raw',
    '-O',
    format,
    ...(subformat ? ['-o', `subformat=${subformat}`] : []),
    src,
    dest,
  ]);
  return dest;
}

async function touch(p: string): Promise<string> {
  await writeFile(p, '');
  return p;
}

async function emptyDir(p: string): Promise<string> {
  await rm(p, { recursive: true, force: true });
  await mkdir(p, { recursive: true });
  return p;
}

function readAll(p: string): Promise<Buffer> {
  return readFile(p);
}

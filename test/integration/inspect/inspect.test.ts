import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { HostService } from '../../../src/host/host-service.js';
import { createLogger } from '../../../src/core/logger.js';
import { MAMORI_BIN } from '../../harness/site-process.js';
import {
  buildUki,
  convertTo,
  corruptPrimaryGpt,
  gptLuks,
  gptUefiDebian,
  lvmCentos6,
  mbrRhel6,
  mbrWindows2012,
  EXT4_UUIDS,
} from '../../harness/disk-fixtures.js';
import type { InspectionReport } from '../../../src/inspect/inspector.js';

/*
 * `mamori inspect` on fixtures built here with Debian's tools: a GPT/UEFI Debian disk with a
 * unified kernel image on its ESP, an MBR RHEL 6 disk (no os-release, logical partition, swap,
 * GRUB legacy boot code), each also as VMDK (monolithicSparse, streamOptimized) and VHDX; a GPT
 * with a damaged primary header; a LUKS partition; a truncated VMDK. Read through qemu-nbd.
 */
type Report = InspectionReport & { source: string; format: string; durationMs: number };
let dir: string;
const disks: Record<string, string> = {};
const MiB = 1024 * 1024;

async function inspect(path: string): Promise<Report> {
  const r = await runProcess(process.execPath, [MAMORI_BIN, '--json', 'inspect', path], { timeoutMs: 120_000 });
  return JSON.parse(r.stdout) as Report;
}

async function inspectFails(path: string): Promise<string> {
  const r = await runProcess(process.execPath, [MAMORI_BIN, 'inspect', path], {
    timeoutMs: 120_000,
    okCodes: [0, 1, 2],
  });
  assert.notEqual(r.code, 0, `inspecting ${path} should fail: ${r.stdout}`);
  return r.stderr;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-inspect-test-'));
  const guest = await new HostService({ siteName: 'test', log: createLogger({ level: 'silent' }) }).testGuest();
  // A UKI needs the EFI-stub kernel (the bzImage), not the PVH ELF QEMU boots directly.
  const uki = await buildUki(
    dir,
    { kernel: join(dirname(guest.kernel), 'vmlinuz'), initrd: guest.initrd },
    'console=ttyS0 panic=-1 quiet',
  );
  disks['gpt'] = await gptUefiDebian(dir, uki);
  disks['mbr'] = await mbrRhel6(dir);
  disks['luks'] = await gptLuks(dir);
  disks['lvm'] = await lvmCentos6(dir);
  disks['win'] = await mbrWindows2012(dir);
  disks['win-virtio'] = await mbrWindows2012(dir, { virtio: true });
  disks['gpt-damaged'] = await corruptPrimaryGpt(disks['gpt'], join(dir, 'gpt-damaged.img'));
  for (const base of ['gpt', 'mbr', 'win'] as const) {
    disks[`${base}.sparse.vmdk`] = await convertTo(
      disks[base]!,
      join(dir, `${base}.sparse.vmdk`),
      'vmdk',
      'monolithicSparse',
    );
    disks[`${base}.stream.vmdk`] = await convertTo(
      disks[base]!,
      join(dir, `${base}.stream.vmdk`),
      'vmdk',
      'streamOptimized',
    );
    disks[`${base}.vhdx`] = await convertTo(disks[base]!, join(dir, `${base}.vhdx`), 'vhdx');
  }
  const whole = await readFile(disks['gpt.sparse.vmdk']!);
  disks['truncated.vmdk'] = join(dir, 'truncated.vmdk');
  await writeFile(disks['truncated.vmdk'], whole.subarray(0, Math.floor(whole.length / 2)));
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const GPT_EXPECTED = {
  partitionTable: 'gpt',
  firmware: 'uefi',
  bootLoader: { kind: 'efi', files: ['/EFI/BOOT/BOOTX64.EFI', '/EFI/debian/grubx64.efi'] },
  partitions: [
    {
      number: 1,
      start: MiB,
      size: 64 * MiB,
      type: 'EFI System',
      name: 'EFI System',
      filesystem: 'fat32',
      label: 'ESP',
      uuid: '1234-ABCD',
    },
    // sfdisk ends it on the last 1 MiB boundary before the backup GPT: 159 MiB.
    {
      number: 2,
      start: 65 * MiB,
      size: 94 * MiB,
      type: 'Linux filesystem',
      name: 'root',
      filesystem: 'ext4',
      label: 'root',
      uuid: EXT4_UUIDS['root'],
    },
  ],
  os: {
    type: 'linux',
    distro: 'debian',
    product: 'Debian GNU/Linux 12 (bookworm)',
    major: 12,
    minor: 5,
    hostname: 'uefi-guest',
    root: 2,
    kernels: ['6.1.0-17-amd64', '6.1.0-18-amd64'],
  },
};

function summary(r: Report): unknown {
  return {
    partitionTable: r.partitionTable,
    firmware: r.firmware,
    bootLoader: { kind: r.bootLoader.kind, files: r.bootLoader.files },
    partitions: r.partitions.map((p) => ({
      number: p.number,
      start: p.start,
      size: p.size,
      type: p.type,
      ...(p.name !== undefined ? { name: p.name } : {}),
      filesystem: p.filesystem,
      ...(p.label !== undefined ? { label: p.label } : {}),
      ...(p.uuid !== undefined ? { uuid: p.uuid } : {}),
    })),
    os: r.os,
  };
}

test('GPT/UEFI Debian: partitions, ESP with its EFI binaries, ext4 root with os-release through a symlink', async () => {
  const r = await inspect(disks['gpt']!);
  assert.deepEqual(summary(r), GPT_EXPECTED);
  assert.equal(r.format, 'raw');
  assert.equal(r.gptHeader, 'primary');
  assert.deepEqual(r.warnings, []);
  assert.ok(
    r.partitions[1]!.features!.includes('extent') && r.partitions[1]!.features!.includes('has_journal'),
    JSON.stringify(r.partitions[1]!.features),
  );
  assert.match(r.firmwareReason, /EFI System Partition and there is no BIOS boot partition/);
});

test('CentOS 6 with its root on LVM: the volumes are listed and the guest is found on lv_root, its kernels on /boot', async () => {
  const r = await inspect(disks['lvm']!);
  assert.deepEqual(
    r.partitions.map((p) => [p.number, p.type, p.filesystem, p.label ?? null]),
    [
      [1, 'Linux', 'ext4', 'lvm-boot'],
      [2, 'Linux LVM', 'lvm2_member', null],
    ],
  );
  assert.deepEqual(
    r.logicalVolumes.map((v) => ({
      vg: v.vg,
      name: v.name,
      size: v.size,
      partitions: v.partitions,
      filesystem: v.filesystem,
      label: v.label ?? null,
    })),
    [
      { vg: 'vg_centos6', name: 'lv_root', size: 40 * MiB, partitions: [2], filesystem: 'ext4', label: 'lvm-root' },
      { vg: 'vg_centos6', name: 'lv_swap', size: 8 * MiB, partitions: [2], filesystem: 'swap', label: null },
    ],
  );
  assert.equal(r.logicalVolumes[0]!.uuid, EXT4_UUIDS['lvm-root']);
  assert.deepEqual(r.os, {
    type: 'linux',
    distro: 'centos',
    product: 'CentOS release 6.10 (Final)',
    major: 6,
    minor: 10,
    hostname: 'centos6-lvm.example.com',
    root: 2,
    rootVolume: 'vg_centos6/lv_root',
    kernels: ['2.6.32-754.el6.x86_64'],
  });
  assert.deepEqual(
    r.warnings.filter((w) => !/boot code/.test(w)),
    [],
  );
  const text = await runProcess(process.execPath, [MAMORI_BIN, 'inspect', disks['lvm']!], { timeoutMs: 120_000 });
  assert.match(text.stdout, /on logical volume vg_centos6\/lv_root \(partition 2\)/);
  assert.match(text.stdout, /vg_centos6\/lv_root\s+40 MiB\s+ext4/);
});

test('MBR RHEL 6: primary, extended and logical partitions, swap, redhat-release without os-release, GRUB in the MBR', async () => {
  const r = await inspect(disks['mbr']!);
  assert.deepEqual(summary(r), {
    partitionTable: 'mbr',
    firmware: 'bios',
    bootLoader: { kind: 'mbr', files: [] },
    partitions: [
      {
        number: 1,
        start: 2048 * 512,
        size: 131072 * 512,
        type: 'Linux',
        filesystem: 'ext4',
        label: 'rhel6-root',
        uuid: EXT4_UUIDS['rhel6-root'],
      },
      {
        number: 2,
        start: 133120 * 512,
        size: 16384 * 512,
        type: 'Linux swap',
        filesystem: 'swap',
        label: 'SWAP',
        uuid: '5f1d0a3e-9a7b-4c3d-8e2f-1a2b3c4d5e6f',
      },
      { number: 3, start: 149504 * 512, size: 128 * MiB - 149504 * 512, type: 'Extended', filesystem: null },
      {
        number: 5,
        start: 151552 * 512,
        size: 65536 * 512,
        type: 'Linux',
        filesystem: 'ext4',
        label: 'data',
        uuid: EXT4_UUIDS['data'],
      },
    ],
    os: {
      type: 'linux',
      distro: 'rhel',
      product: 'Red Hat Enterprise Linux Server release 6.10 (Santiago)',
      major: 6,
      minor: 10,
      hostname: 'rhel6.example.com',
      root: 1,
      kernels: ['2.6.32-754.el6.x86_64'],
    },
  });
  assert.equal(r.diskId, '0x31323334');
  assert.equal(r.bootLoader.detail, 'GRUB boot code in the MBR');
  assert.equal(r.partitions[0]!.bootable, true);
});

test('the same disks as VMDK (sparse, streamOptimized) and VHDX inspect the same, read through QEMU', async () => {
  const raw = {
    gpt: summary(await inspect(disks['gpt']!)),
    mbr: summary(await inspect(disks['mbr']!)),
    win: summary(await inspect(disks['win']!)),
  };
  for (const base of ['gpt', 'mbr', 'win'] as const) {
    for (const [suffix, format] of [
      ['sparse.vmdk', 'vmdk'],
      ['stream.vmdk', 'vmdk'],
      ['vhdx', 'vhdx'],
    ] as const) {
      const r = await inspect(disks[`${base}.${suffix}`]!);
      assert.equal(r.format, format);
      assert.deepEqual(summary(r), raw[base], `${base}.${suffix}`);
    }
  }
});

test('MBR Windows Server 2012 R2: NTFS with SOFTWARE and SYSTEM hives, Windows boot code, virtio drivers or their absence', async () => {
  const r = await inspect(disks['win']!);
  // mkntfs made the volume serial up: blkid (util-linux's own NTFS probe) says what it is.
  const serial = (
    await runProcess('blkid', ['-p', '-O', String(MiB), '-o', 'value', '-s', 'UUID', disks['win']!])
  ).stdout.trim();
  assert.match(serial, /^[0-9A-F]{16}$/);
  assert.deepEqual(summary(r), {
    partitionTable: 'mbr',
    firmware: 'bios',
    bootLoader: { kind: 'mbr', files: [] },
    partitions: [
      {
        number: 1,
        start: MiB,
        size: 196608 * 512,
        type: 'NTFS/exFAT',
        filesystem: 'ntfs',
        label: 'Windows',
        uuid: serial,
      },
    ],
    os: {
      type: 'windows',
      distro: 'windows',
      product: 'Windows Server 2012 R2 Standard',
      major: 6,
      minor: 3,
      hostname: 'WIN2012R2',
      root: 1,
      kernels: [],
      build: '9600',
      installationType: 'Server',
      virtioDrivers: [],
    },
  });
  assert.equal(r.bootLoader.detail, 'Windows boot code in the MBR');
  assert.deepEqual(r.warnings, [
    'the Windows guest on partition 1 has no virtio drivers installed: it gets SATA disks and an e1000 NIC, which are slower',
  ]);
  const v = await inspect(disks['win-virtio']!);
  assert.deepEqual(v.os.virtioDrivers, ['viostor', 'netkvm']);
  assert.deepEqual(v.warnings, []);
});

test('a damaged primary GPT header: the backup is used, and the report says so', async () => {
  const r = await inspect(disks['gpt-damaged']!);
  assert.equal(r.gptHeader, 'backup');
  assert.deepEqual(
    (summary(r) as { partitions: unknown }).partitions,
    (summary(await inspect(disks['gpt']!)) as { partitions: unknown }).partitions,
  );
  assert.equal(r.warnings.length, 1);
  assert.match(
    r.warnings[0]!,
    /primary GPT header is damaged \(header CRC-32 mismatch\); the backup header at LBA \d+ was used/,
  );
});

test("a LUKS partition is reported as encrypted and not read; a truncated VMDK is refused with QEMU's reason", async () => {
  const r = await inspect(disks['luks']!);
  const crypt = r.partitions.find((p) => p.number === 2)!;
  assert.equal(crypt.filesystem, 'crypto_luks');
  assert.equal(crypt.encrypted, true);
  assert.equal(crypt.label, 'secret');
  assert.ok(
    r.warnings.some((w) => /partition 2 is encrypted \(LUKS 2\)/.test(w)),
    JSON.stringify(r.warnings),
  );
  assert.equal(r.os.type, 'unknown');
  const err = await inspectFails(disks['truncated.vmdk']!);
  assert.match(err, /IMAGE_CORRUPT|IMAGE_UNREADABLE/);
  assert.match(err, /truncated\.vmdk/);
  const missing = await inspectFails(join(dir, 'no-such.img'));
  assert.match(missing, /no disk or image at .*no-such\.img.*IMAGE_NOT_FOUND/);
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { runProcess } from '../../../src/core/run-process.js';
import { bufferReader } from '../../../src/inspect/byte-reader.js';
import { probeFilesystem } from '../../../src/inspect/filesystem-probe.js';
import { linuxRelease, parseOsRelease, parseRedhatRelease } from '../../../src/inspect/linux-release.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-probe-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A blank file of `mib` MiB formatted by `cmd args... FILE`, read back. */
async function formatted(name: string, mib: number, cmd: string, args: string[], input?: string): Promise<Buffer> {
  const p = join(dir, name);
  await writeFile(p, '');
  await truncate(p, mib * 1024 * 1024);
  await runProcess(cmd, [...args, p], { timeoutMs: 60_000, ...(input !== undefined ? { input } : {}) });
  return readFile(p);
}

test('superblocks made by the real tools: ext2/3/4, FAT12/16/32, NTFS, swap, LUKS1/2', async () => {
  const probe = async (b: Buffer) => probeFilesystem(bufferReader(b));
  const ext4 = await probe(
    await formatted('e4', 8, 'mkfs.ext4', ['-q', '-F', '-L', 'r', '-U', '11111111-2222-4333-8444-555555555555']),
  );
  assert.equal(ext4!.type, 'ext4');
  assert.equal(ext4!.label, 'r');
  assert.equal(ext4!.uuid, '11111111-2222-4333-8444-555555555555');
  assert.equal((await probe(await formatted('e3', 8, 'mkfs.ext3', ['-q', '-F'])))!.type, 'ext3');
  assert.equal((await probe(await formatted('e2', 8, 'mkfs.ext2', ['-q', '-F'])))!.type, 'ext2');
  assert.deepEqual(await probe(await formatted('f12', 2, 'mkfs.fat', ['-F', '12', '-n', 'SMALL', '-i', 'A1B2C3D4'])), {
    type: 'fat12',
    uuid: 'A1B2-C3D4',
    label: 'SMALL',
  });
  assert.equal((await probe(await formatted('f16', 32, 'mkfs.fat', ['-F', '16'])))!.type, 'fat16');
  assert.equal((await probe(await formatted('f32', 40, 'mkfs.fat', ['-F', '32'])))!.type, 'fat32');
  assert.equal((await probe(await formatted('ntfs', 16, 'mkntfs', ['-q', '-F', '-Q', '-L', 'Windows'])))!.type, 'ntfs');
  assert.deepEqual(
    await probe(await formatted('swap', 8, 'mkswap', ['-q', '-L', 'sw', '-U', '5f1d0a3e-9a7b-4c3d-8e2f-1a2b3c4d5e6f'])),
    { type: 'swap', version: '1', uuid: '5f1d0a3e-9a7b-4c3d-8e2f-1a2b3c4d5e6f', label: 'sw' },
  );
  const luksArgs = ['luksFormat', '-q', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', '-'];
  const luks2 = await probe(
    await formatted('luks2', 20, 'cryptsetup', [...luksArgs, '--type', 'luks2', '--label', 'vault'], 'pw'),
  );
  assert.equal(luks2!.type, 'crypto_luks');
  assert.equal(luks2!.version, '2');
  assert.equal(luks2!.label, 'vault');
  assert.equal(luks2!.encrypted, true);
  const luks1 = await probe(await formatted('luks1', 20, 'cryptsetup', [...luksArgs, '--type', 'luks1'], 'pw'));
  assert.equal(luks1!.version, '1');
});

test('xfs, btrfs and LVM2 physical volumes from their documented magic, and nothing from zeros', async () => {
  const xfs = Buffer.alloc(68 * 1024);
  xfs.write('XFSB', 0, 'latin1');
  Buffer.from('00112233445566778899aabbccddeeff', 'hex').copy(xfs, 32);
  xfs.write('data', 108, 'latin1');
  assert.deepEqual(await probeFilesystem(bufferReader(xfs)), {
    type: 'xfs',
    uuid: '00112233-4455-6677-8899-aabbccddeeff',
    label: 'data',
  });

  const btrfs = Buffer.alloc(68 * 1024);
  btrfs.write('_BHRfS_M', 65536 + 64, 'latin1');
  Buffer.from('ffeeddccbbaa99887766554433221100', 'hex').copy(btrfs, 65536 + 32);
  btrfs.write('pool', 65536 + 0x12b, 'latin1');
  assert.deepEqual(await probeFilesystem(bufferReader(btrfs)), {
    type: 'btrfs',
    uuid: 'ffeeddcc-bbaa-9988-7766-554433221100',
    label: 'pool',
  });

  const pv = Buffer.alloc(68 * 1024);
  pv.write('LABELONE', 512, 'latin1');
  pv.writeUInt32LE(32, 512 + 20);
  pv.write('LVM2 001', 512 + 24, 'latin1');
  pv.write('abcdefGHIJklmnOPQRstuvWXYZ012345', 512 + 32, 'latin1');
  assert.deepEqual(await probeFilesystem(bufferReader(pv)), {
    type: 'lvm2_member',
    version: 'LVM2 001',
    uuid: 'abcdef-GHIJ-klmn-OPQR-stuv-WXYZ-012345',
  });

  assert.equal(await probeFilesystem(bufferReader(Buffer.alloc(68 * 1024))), null);
  // A partition smaller than the probe window is read only as far as it goes.
  assert.equal(await probeFilesystem(bufferReader(Buffer.alloc(4096))), null);
});

test('release files: os-release quoting, redhat-release of RHEL 6 and CentOS', () => {
  assert.deepEqual(
    parseOsRelease('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\n# comment\nPRETTY_NAME=\'Ubuntu 22.04.3 LTS\'\n'),
    { NAME: 'Ubuntu', VERSION_ID: '22.04', ID: 'ubuntu', PRETTY_NAME: 'Ubuntu 22.04.3 LTS' },
  );
  assert.deepEqual(parseRedhatRelease('Red Hat Enterprise Linux Server release 6.10 (Santiago)'), {
    distro: 'rhel',
    product: 'Red Hat Enterprise Linux Server release 6.10 (Santiago)',
    major: 6,
    minor: 10,
  });
  assert.deepEqual(parseRedhatRelease('CentOS release 6.5 (Final)'), {
    distro: 'centos',
    product: 'CentOS release 6.5 (Final)',
    major: 6,
    minor: 5,
  });
  assert.equal(parseRedhatRelease('Slackware 15.0'), null);
});

test('fuzz finding: a partition cut short inside an NTFS, exFAT or LUKS header is FILESYSTEM_UNREADABLE, not a RangeError', async () => {
  const ntfs = Buffer.alloc(12);
  ntfs.write('NTFS    ', 3, 'latin1');
  const exfat = Buffer.alloc(64);
  exfat.write('EXFAT   ', 3, 'latin1');
  const luks = Buffer.from('LUKS\xba\xbe\x00', 'latin1');
  for (const head of [ntfs, exfat, luks]) {
    await assert.rejects(
      probeFilesystem(bufferReader(head)),
      (e: unknown) => isMamoriError(e, 'FILESYSTEM_UNREADABLE'),
      head.toString('latin1'),
    );
  }
});

test('fuzz finding: an os-release ID naming an Object.prototype member is a plain distro string', async () => {
  for (const id of ['constructor', '__proto__', 'toString']) {
    const fs = {
      readFile: async (p: string) => (p === '/etc/os-release' ? Buffer.from(`ID=${id}\nNAME=x\n`) : null),
      listDir: async () => [],
    };
    assert.equal((await linuxRelease(fs))?.distro, id.toLowerCase());
  }
});

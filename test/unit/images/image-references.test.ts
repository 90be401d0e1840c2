import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { bufferImageBytes, fileImageBytes } from '../../../src/images/image-bytes.js';
import {
  probeImageFormat,
  readImageReferences,
  type ImageReference,
  type UntrustedFormat,
} from '../../../src/images/image-references.js';
import { descriptorReferences } from '../../../src/images/vmdk-references.js';
import {
  qcow2WithBacking,
  qcow2WithDataFile,
  qcow2WithJsonBacking,
  splitVmdk,
  vhdxWithParent,
  vmdkWithFlatExtent,
  vpcDifferencing,
} from '../../harness/untrusted-image-fixtures.js';

/*
 * The header readers on images qemu-img made here (and on bytes patched where qemu-img cannot
 * make the kind): what each names, and a typed IMAGE_CORRUPT for truncated or garbage input.
 */
let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-image-refs-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function img(name: string, ...args: string[]): Promise<string> {
  const path = join(dir, name);
  await runProcess('qemu-img', ['create', '-q', ...args.slice(0, -1), path, args.at(-1)!]);
  return path;
}

async function refsOf(path: string, format?: UntrustedFormat): Promise<{ format: string; refs: ImageReference[] }> {
  const buf = await readFile(path);
  const bytes = bufferImageBytes(buf, path);
  const f = format ?? (await probeImageFormat(bytes));
  return { format: f, refs: await readImageReferences(bytes, f as UntrustedFormat) };
}

async function corrupt(buf: Buffer, format: UntrustedFormat): Promise<void> {
  await assert.rejects(
    readImageReferences(bufferImageBytes(buf, 'x'), format),
    (e: unknown) => isMamoriError(e, 'IMAGE_CORRUPT'),
    `${format} ${buf.length} bytes`,
  );
}

test('qcow2: none for a plain image; backing file (v3, v2, json:) and external data file named', async () => {
  assert.deepEqual(await refsOf(await img('plain.qcow2', '-f', 'qcow2', '1M')), { format: 'qcow2', refs: [] });
  const host = join(dir, 'host.raw');
  await writeFile(host, Buffer.alloc(4096));
  const v3 = await refsOf(await qcow2WithBacking(join(dir, 'b3.qcow2'), host));
  assert.deepEqual(v3.refs, [{ kind: 'backing-file', name: host, where: 'qcow2 header (backing file)' }]);
  const v2 = await img('b2.qcow2', '-f', 'qcow2', '-o', 'compat=0.10', '-b', host, '-F', 'raw', '1M');
  assert.equal((await refsOf(v2)).refs[0]?.name, host);
  const json = await refsOf(await qcow2WithJsonBacking(join(dir, 'bj.qcow2'), host));
  assert.match(json.refs[0]!.name, /^json:\{.*host\.raw/);
  const data = await refsOf(await qcow2WithDataFile(join(dir, 'df.qcow2'), join(dir, 'df.bin')));
  assert.deepEqual(
    data.refs.map((r) => [r.kind, r.name]),
    [['data-file', join(dir, 'df.bin')]],
  );
});

test('qcow2: truncated and garbage headers are IMAGE_CORRUPT, never a crash', async () => {
  const good = await readFile(await qcow2WithBacking(join(dir, 'b.qcow2'), '/etc/hostname'));
  for (const n of [0, 4, 40, 71, 100]) await corrupt(good.subarray(0, n), 'qcow2');
  const badVersion = Buffer.from(good);
  badVersion.writeUInt32BE(7, 4);
  await corrupt(badVersion, 'qcow2');
  const badBacking = Buffer.from(good);
  badBacking.writeBigUInt64BE(1n << 40n, 8);
  await corrupt(badBacking, 'qcow2');
  await corrupt(Buffer.concat([Buffer.from('QFI\xfb', 'latin1'), randomBytes(4092)]), 'qcow2');
  await corrupt(randomBytes(4096), 'qcow2');
});

test('VMDK: monolithicSparse and streamOptimized name nothing; split and flat descriptors name their extents', async () => {
  assert.deepEqual(await refsOf(await img('ms.vmdk', '-f', 'vmdk', '-o', 'subformat=monolithicSparse', '1M')), {
    format: 'vmdk',
    refs: [],
  });
  assert.deepEqual(await refsOf(await img('so.vmdk', '-f', 'vmdk', '-o', 'subformat=streamOptimized', '1M')), {
    format: 'vmdk',
    refs: [],
  });
  const split = await refsOf(await splitVmdk(join(dir, 'split'), 's.vmdk'));
  assert.deepEqual(
    split.refs.map((r) => [r.kind, r.name]),
    [['extent', 's-s001.vmdk']],
  );
  const flat = await refsOf(await vmdkWithFlatExtent(join(dir, 'f.vmdk'), '../x/host.bin'));
  assert.deepEqual(
    flat.refs.map((r) => [r.kind, r.name, r.where]),
    [['extent', '../x/host.bin', 'descriptor line 8']],
  );
});

test('VMDK: delta disks name their parent; a sparse file with capacity 0 has its embedded extents counted', async () => {
  const b = bufferImageBytes(Buffer.alloc(0));
  const delta = descriptorReferences(
    b,
    '# Disk DescriptorFile\nversion=1\nparentCID=12345678\nparentFileNameHint="/vmfs/volumes/ds/base.vmdk"\nRW 8 SPARSE "d.vmdk"\n',
    { extentsAreFiles: true, where: 'descriptor' },
  );
  assert.deepEqual(
    delta.map((r) => [r.kind, r.name]),
    [
      ['extent', 'd.vmdk'],
      ['parent', '/vmfs/volumes/ds/base.vmdk'],
    ],
  );
  const unnamed = descriptorReferences(b, 'version=1\nparentCID=0badf00d\n', {
    extentsAreFiles: true,
    where: 'descriptor',
  });
  assert.deepEqual(
    unnamed.map((r) => [r.kind, r.name]),
    [['parent', '']],
  );
  // Every access word, leading blanks and tabs; QEMU's sscanf reads all of these lines.
  const odd = descriptorReferences(b, '  RDONLY 8 VMFS "a"\nNOACCESS\t8 FLAT "/b" 0\nRW 8 ZERO\n#RW 8 FLAT "c" 0\n', {
    extentsAreFiles: true,
    where: 'd',
  });
  assert.deepEqual(
    odd.map((r) => r.name),
    ['a', '/b'],
  );

  // ESXi-style: KDMV with capacity 0 makes QEMU open the embedded descriptor's extents.
  const ms = await readFile(await img('cap0.vmdk', '-f', 'vmdk', '-o', 'subformat=monolithicSparse', '1M'));
  const descAt = Number(ms.readBigUInt64LE(28)) * 512;
  const text = ms.toString('latin1', descAt, descAt + 512);
  const evil = Buffer.from(ms);
  evil.write(text.replace(/RW 2048 SPARSE "[^"]*"/, 'RW 2048 FLAT "/etc/hostname" 0'), descAt, 'latin1');
  assert.deepEqual(
    (await refsOf(await save('cap-nonzero.vmdk', evil))).refs,
    [],
    'capacity set: QEMU ignores the embedded extents',
  );
  evil.writeBigUInt64LE(0n, 12);
  assert.deepEqual(
    (await refsOf(await save('cap0-evil.vmdk', evil))).refs.map((r) => [r.kind, r.name]),
    [['extent', '/etc/hostname']],
  );
});

test('VMDK: truncated sparse and streamOptimized files are IMAGE_CORRUPT; COWD is unsupported', async () => {
  const so = await readFile(await img('so2.vmdk', '-f', 'vmdk', '-o', 'subformat=streamOptimized', '1M'));
  for (const n of [4, 100, 511]) await corrupt(so.subarray(0, n), 'vmdk');
  // A header that says its real copy is in the footer (GD_AT_END), in a file whose footer is gone.
  const cut = Buffer.from(so.subarray(0, so.length - 600));
  cut.writeBigUInt64LE(0xffffffffffffffffn, 56);
  await corrupt(cut, 'vmdk');
  const desc = Buffer.from(so);
  desc.writeBigUInt64LE(1n << 40n, 28);
  await corrupt(desc, 'vmdk');
  await assert.rejects(
    readImageReferences(bufferImageBytes(Buffer.from('COWD' + '\0'.repeat(2044), 'latin1')), 'vmdk'),
    (e: unknown) => isMamoriError(e, 'IMAGE_FORMAT_UNSUPPORTED'),
  );
});

test('VHDX: none for a dynamic image; a differencing one names its parent paths; damage is IMAGE_CORRUPT', async () => {
  assert.deepEqual(await refsOf(await img('d.vhdx', '-f', 'vhdx', '4M')), { format: 'vhdx', refs: [] });
  const child = await refsOf(await vhdxWithParent(join(dir, 'child.vhdx'), 'parent.vhdx'));
  assert.deepEqual(
    child.refs.map((r) => [r.name, r.where]),
    [
      ['parent.vhdx', 'VHDX parent locator relative_path'],
      ['C:\\parent.vhdx', 'VHDX parent locator absolute_win32_path'],
    ],
  );
  const whole = await readFile(join(dir, 'child.vhdx'));
  for (const n of [8, 100_000, 200_000]) await corrupt(whole.subarray(0, n), 'vhdx');
  const noRegions = Buffer.from(whole);
  noRegions.fill(0, 192 * 1024, 320 * 1024);
  await corrupt(noRegions, 'vhdx');
  await corrupt(randomBytes(512 * 1024), 'vhdx');
});

test('VHD: fixed and dynamic name nothing; a differencing disk names its parent and locators; garbage is IMAGE_CORRUPT', async () => {
  assert.deepEqual(await refsOf(await img('dyn.vhd', '-f', 'vpc', '-o', 'subformat=dynamic', '4M')), {
    format: 'vpc',
    refs: [],
  });
  const fixed = await img('fixed.vhd', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', '4M');
  assert.equal(
    (await refsOf(fixed)).format,
    'raw',
    'a fixed VHD has its footer only at the end: raw, as QEMU probes it',
  );
  assert.deepEqual((await refsOf(fixed, 'vpc')).refs, []);
  const diff = await refsOf(await vpcDifferencing(join(dir, 'diff.vhd'), 'base.vhd'));
  assert.deepEqual(
    diff.refs.map((r) => [r.name, r.where]),
    [
      ['base.vhd', 'VHD parent unicode name'],
      ['C:\\base.vhd', 'VHD parent locator W2ku'],
    ],
  );
  await corrupt(randomBytes(4096), 'vpc');
  await corrupt(Buffer.alloc(10), 'vpc');
});

test('the probe names formats by magic and reads only a bounded window of a member', async () => {
  assert.equal((await refsOf(await img('r.raw', '-f', 'raw', '1M'))).format, 'raw');
  assert.equal(await probeImageFormat(bufferImageBytes(Buffer.from('QED\0xxxx'))), 'qed');
  assert.equal(await probeImageFormat(bufferImageBytes(Buffer.from('# Disk DescriptorFile\nversion=1\n'))), 'vmdk');
  assert.equal(await probeImageFormat(bufferImageBytes(Buffer.from('\n# c\nversion=1\nCID=1\n'))), 'vmdk');
  // A qcow2 stored at an offset inside a bigger file (an OVA member) is read there, and nowhere past its end.
  const q = await readFile(await qcow2WithBacking(join(dir, 'm.qcow2'), '/etc/hostname'));
  const file = await save('holder.bin', Buffer.concat([Buffer.alloc(1024, 0x55), q, Buffer.alloc(1024, 0x66)]));
  const fh = await open(file, 'r');
  try {
    const bytes = fileImageBytes(fh, q.length + 2048, 'holder', { offset: 1024, size: q.length });
    assert.equal(await probeImageFormat(bytes), 'qcow2');
    assert.deepEqual(
      (await readImageReferences(bytes, 'qcow2')).map((r) => r.name),
      ['/etc/hostname'],
    );
    assert.equal((await bytes.read(q.length - 10, 100)).length, 10);
  } finally {
    await fh.close();
  }
});

async function save(name: string, buf: Buffer): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, buf);
  return p;
}

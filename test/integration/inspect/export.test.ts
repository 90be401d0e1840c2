import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, truncate, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess } from '../../harness/site-process.js';
import { mbrRhel6 } from '../../harness/disk-fixtures.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { ConvertResult } from '../../../src/convert/conversion-job.js';
import type { ExportResult } from '../../../src/convert/export-service.js';

/*
 * `mamori export` the other way: a VM (converted from the RHEL 6 fixture, 2 vCPUs, 512 MiB)
 * leaves as a VMDK, a VHDX and an OVA that equal its disk (qemu-img compare); the OVA is a
 * tar of descriptor, manifest and streamOptimized VMDK in that order, with checksums that
 * hold; and converting the OVA (or its unpacked .ovf) back gives the same hardware and disk.
 */
let site: SiteProcess;
let dir: string;
let vmDisk: { path: string; format: string };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-export-test-'));
  const fixture = await mbrRhel6(dir);
  site = await SiteProcess.create('site-x');
  await site.start();
  const job = await site.cliJson<Job & { result: ConvertResult }>(
    'convert',
    fixture,
    '--name',
    'rhel',
    '--memory',
    '512',
    '--vcpus',
    '2',
  );
  assert.equal(job.state, 'succeeded');
  const vm = await site.cliJson<VmView>('vm', 'show', 'rhel');
  vmDisk = { path: vm.disks[0]!.path, format: vm.disks[0]!.format };
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function exportVm(...args: string[]): Promise<ExportResult> {
  const job = await site.cliJson<Job & { result: ExportResult }>('export', ...args);
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  return job.result;
}

async function identical(a: string, aFormat: string, b: string, bFormat: string): Promise<void> {
  const cmp = await runProcess('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b], {
    timeoutMs: 120_000,
    okCodes: [0, 1],
  });
  assert.equal(cmp.code, 0, `${a} differs from ${b}: ${cmp.stdout}`);
}

test('a stopped VM exports as VMDK (lsilogic) and VHDX equal to its disk', async () => {
  const vmdk = await exportVm('rhel', '--format', 'vmdk');
  assert.deepEqual(vmdk.files, [join(site.dataDir, 'exports', 'rhel-disk0.vmdk')]);
  await identical(vmdk.files[0]!, 'vmdk', vmDisk.path, vmDisk.format);
  const head = (await readFile(vmdk.files[0]!)).subarray(0, 64 * 1024).toString('latin1');
  assert.match(head, /createType="monolithicSparse"/);
  assert.match(head, /ddb\.adapterType = "lsilogic"/);
  const out = join(dir, 'for-hyperv');
  const vhdx = await exportVm('rhel', '--format', 'vhdx', '--output', out);
  assert.deepEqual(vhdx.files, [join(out, 'rhel-disk0.vhdx')]);
  assert.equal(
    (await runProcess('qemu-img', ['info', '--output=json', vhdx.files[0]!])).stdout.includes('"format": "vhdx"'),
    true,
  );
  await identical(vhdx.files[0]!, 'vhdx', vmDisk.path, vmDisk.format);
  assert.deepEqual(await readdir(out), ['rhel-disk0.vhdx'], 'no scratch left beside it');
});

test('an OVA holds descriptor, manifest and disk in order, with checksums that hold', async () => {
  const r = await exportVm('rhel', '--format', 'ova', '--output', join(dir, 'ova'));
  const ova = r.files[0]!;
  assert.equal(ova, join(dir, 'ova', 'rhel.ova'));
  const list = (await runProcess('tar', ['-tf', ova])).stdout.trim().split('\n');
  assert.deepEqual(list, ['rhel.ovf', 'rhel.mf', 'rhel-disk0.vmdk']);
  const unpacked = join(dir, 'unpacked');
  await mkdir(unpacked);
  await runProcess('tar', ['-xf', ova, '-C', unpacked]);
  const ovf = await readFile(join(unpacked, 'rhel.ovf'), 'utf8');
  assert.match(ovf, /<rasd:ResourceType>3<\/rasd:ResourceType>/);
  assert.match(ovf, /<rasd:VirtualQuantity>2<\/rasd:VirtualQuantity>/, 'two vCPUs');
  assert.match(ovf, /<rasd:VirtualQuantity>512<\/rasd:VirtualQuantity>/, '512 MiB');
  assert.match(ovf, /streamOptimized/);
  // The guest OS comes from inspecting the VM's disk (RHEL 6.10), not a fixed Other Linux.
  assert.match(ovf, /<OperatingSystemSection ovf:id="80" vmw:osType="rhel6_64Guest">/);
  assert.equal(r.guestOs?.vmwOsType, 'rhel6_64Guest');
  for (const line of (await readFile(join(unpacked, 'rhel.mf'), 'utf8')).trim().split('\n')) {
    const m = /^SHA256\((.+)\)= ([0-9a-f]{64})$/.exec(line);
    assert.ok(m, `manifest line ${line}`);
    assert.equal(
      createHash('sha256')
        .update(await readFile(join(unpacked, m[1]!)))
        .digest('hex'),
      m[2],
      `${m[1]} matches the manifest`,
    );
  }
  await identical(join(unpacked, 'rhel-disk0.vmdk'), 'vmdk', vmDisk.path, vmDisk.format);

  // Back in: the OVA read in place, and the unpacked .ovf with a memory override.
  const back = await site.cliJson<Job & { result: ConvertResult }>('convert', ova, '--name', 'rhel-back');
  assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
  assert.equal(back.result.vcpus, 2);
  assert.equal(back.result.memoryMiB, 512);
  assert.equal(back.result.firmware, 'bios');
  assert.equal(back.result.os.distro, 'rhel');
  assert.deepEqual(back.result.descriptor, { vcpus: 2, memoryMiB: 512, firmware: 'bios', warnings: [] });
  const vm = await site.cliJson<VmView>('vm', 'show', 'rhel-back');
  await identical(vm.disks[0]!.path, vm.disks[0]!.format, vmDisk.path, vmDisk.format);
  const fromOvf = await site.cliJson<Job & { result: ConvertResult }>(
    'convert',
    join(unpacked, 'rhel.ovf'),
    '--name',
    'rhel-ovf',
    '--memory',
    '256',
  );
  assert.equal(fromOvf.state, 'succeeded', JSON.stringify(fromOvf.error));
  assert.equal(fromOvf.result.memoryMiB, 256, '--memory overrides the descriptor');
  assert.equal(fromOvf.result.vcpus, 2);
});

test('export refuses a running VM and an existing file; a damaged OVA is refused; nothing is left', async () => {
  await site.cliJson('vm', 'start', 'rhel');
  const running = await site.cli('export', 'rhel', '--format', 'vmdk', '--output', join(dir, 'running'));
  assert.notEqual(running.code, 0);
  assert.match(running.stderr, /stop it first.*\[VM_RUNNING\]/);
  await site.cliJson('vm', 'kill', 'rhel');
  const again = await site.cli('export', 'rhel', '--format', 'vmdk');
  assert.match(again.stderr, /already exists.*\[DISK_EXISTS\]/);
  assert.deepEqual((await readdir(join(site.dataDir, 'exports'))).sort(), ['rhel-disk0.vmdk']);

  const elsewhere = await site.cli('convert', join(dir, 'ova', 'rhel.ova'), '--site', 'site-elsewhere', '--name', 'x1');
  assert.equal(elsewhere.code, 2);
  assert.match(elsewhere.stderr, /talks to site site-x, not site-elsewhere/);
  const here = await site.cliJson<Job & { result: ConvertResult }>(
    'convert',
    join(dir, 'ova', 'rhel.ova'),
    '--site',
    'site-x',
    '--name',
    'x2',
    '--machine',
    'pc',
  );
  assert.equal(here.state, 'succeeded');
  assert.match(
    (await site.cliJson<VmView>('vm', 'show', 'x2')).machineType,
    /^pc-i440fx-\d+\.\d+$/,
    'the alias is pinned to its version',
  );
  const tooNew = await site.cli('convert', join(dir, 'ova', 'rhel.ova'), '--name', 'x3', '--machine', 'pc-q35-99.0');
  assert.equal(tooNew.code, 2);
  assert.match(tooNew.stderr, /QEMU has no machine type pc-q35-99\.0: convert with --machine q35 \(pc-q35-/);

  const cut = join(dir, 'cut.ova');
  await copyFile(join(dir, 'ova', 'rhel.ova'), cut);
  await truncate(cut, Math.floor((await stat(cut)).size / 2));
  const bad = await site.cli('convert', cut, '--name', 'from-cut');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /\[IMAGE_CORRUPT\]/);
  const disks = await site.cliJson<{ name: string }[]>('disk', 'list');
  assert.deepEqual(
    disks.map((d) => d.name).filter((n) => n.startsWith('from-cut') || n.startsWith('x3')),
    [],
  );
});

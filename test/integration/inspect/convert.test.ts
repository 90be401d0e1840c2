import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { HostService } from '../../../src/host/host-service.js';
import { createLogger } from '../../../src/core/logger.js';
import { SiteProcess } from '../../harness/site-process.js';
import { buildUki, convertTo, gptUefiDebian, mbrRhel6, mbrWindows2012 } from '../../harness/disk-fixtures.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { ConvertResult } from '../../../src/convert/conversion-job.js';

/*
 * `mamori convert` at a real site: a GPT/UEFI disk (as a streamOptimized VMDK) whose ESP holds a
 * unified kernel image of the test guest becomes a VM that boots under OVMF and beats; the
 * converted image equals its source (qemu-img compare); an MBR/BIOS disk gets SeaBIOS; bad
 * sources are refused and leave nothing behind.
 */
let site: SiteProcess;
let dir: string;
const sources: Record<string, string> = {};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-convert-test-'));
  const guest = await new HostService({ siteName: 'test', log: createLogger({ level: 'silent' }) }).testGuest();
  const uki = await buildUki(
    dir,
    { kernel: join(dirname(guest.kernel), 'vmlinuz'), initrd: guest.initrd },
    'console=ttyS0 panic=-1 quiet',
  );
  sources['uefi'] = await convertTo(await gptUefiDebian(dir, uki), join(dir, 'uefi.vmdk'), 'vmdk', 'streamOptimized');
  sources['bios'] = await mbrRhel6(dir);
  sources['windows'] = await convertTo(await mbrWindows2012(dir), join(dir, 'win.vhdx'), 'vhdx');
  const whole = await readFile(sources['uefi']);
  sources['truncated'] = join(dir, 'truncated.vmdk');
  await writeFile(sources['truncated'], whole.subarray(0, Math.floor(whole.length / 2)));
  sources['blank'] = join(dir, 'blank.img');
  await writeFile(sources['blank'], '');
  await truncate(sources['blank'], 16 * 1024 * 1024);
  site = await SiteProcess.create('site-a');
  await site.start();
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function convert(...args: string[]): Promise<Job & { result: ConvertResult }> {
  const r = await site.cli('--json', 'convert', ...args);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 2000));
  return JSON.parse(r.stdout) as Job & { result: ConvertResult };
}

test('a GPT/UEFI VMDK converts into a VM equal to its source that boots under OVMF', async () => {
  const job = await convert(sources['uefi']!, '--name', 'p2v-uefi');
  assert.equal(job.state, 'succeeded');
  assert.equal(job.result.firmware, 'uefi');
  assert.equal(job.result.nicModel, 'virtio-net-pci', 'a Linux guest has virtio drivers');
  assert.equal(job.result.os.distro, 'debian');
  const vm = await site.cliJson<VmView>('vm', 'show', 'p2v-uefi');
  assert.equal(vm.firmware, 'uefi');
  assert.equal(vm.disks.length, 1);
  // Every byte the guest sees equals the source's.
  const cmp = await runProcess(
    'qemu-img',
    ['compare', '-f', 'vmdk', '-F', vm.disks[0]!.format, sources['uefi']!, vm.disks[0]!.path],
    { timeoutMs: 120_000, okCodes: [0, 1] },
  );
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  await site.cliJson('vm', 'start', 'p2v-uefi');
  await site.waitFor(
    "the converted guest's heartbeat",
    async () => (await site.cliJson<VmView>('vm', 'show', 'p2v-uefi')).lastHeartbeatAt ?? undefined,
    240_000,
  );
  await site.cliJson('vm', 'kill', 'p2v-uefi');
});

test('an MBR/BIOS disk gets SeaBIOS; it can start at once', async () => {
  const job = await convert(sources['bios']!, '--name', 'p2v-bios', '--format', 'raw', '--memory', '128');
  assert.equal(job.result.firmware, 'bios');
  assert.equal(job.result.os.distro, 'rhel');
  const vm = await site.cliJson<VmView>('vm', 'show', 'p2v-bios');
  assert.equal(vm.firmware, 'bios');
  assert.equal(vm.memoryMiB, 128);
  assert.equal(vm.disks[0]!.format, 'raw');
  const cmp = await runProcess('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', sources['bios']!, vm.disks[0]!.path], {
    timeoutMs: 120_000,
    okCodes: [0, 1],
  });
  assert.equal(cmp.code, 0, cmp.stdout);
});

test('a Windows guest without virtio drivers gets SATA disks and an e1000 NIC, and says so; QEMU runs it', async () => {
  const job = await convert(sources['windows']!, '--name', 'v2v-win');
  assert.equal(job.result.os.product, 'Windows Server 2012 R2 Standard');
  assert.equal(job.result.diskBus, 'sata');
  assert.equal(job.result.nicModel, 'e1000');
  assert.ok(
    job.result.warnings.some((w) => /no virtio storage driver \(viostor\): its disk is attached as SATA/.test(w)),
    JSON.stringify(job.result.warnings),
  );
  const vm = await site.cliJson<VmView>('vm', 'show', 'v2v-win');
  assert.equal(vm.diskBus, 'sata');
  assert.equal(vm.nics[0]!.model, 'e1000');
  // The fixture is no real Windows, but QEMU must accept the AHCI controller and its disk.
  await site.cliJson('vm', 'start', 'v2v-win');
  assert.equal((await site.cliJson<VmView>('vm', 'show', 'v2v-win')).state, 'running');
  await site.cliJson('vm', 'kill', 'v2v-win');
});

test('bad sources are refused with a clear message and leave no VM, disk or file behind', async () => {
  const before = await readdir(join(site.dataDir, 'pools', 'default')).catch(() => []);
  const truncated = await site.cli('convert', sources['truncated']!, '--name', 'broken');
  assert.notEqual(truncated.code, 0);
  assert.match(truncated.stderr, /truncated\.vmdk .*(damaged|cannot)/);
  const blank = await site.cli('convert', sources['blank']!, '--name', 'blank');
  assert.match(blank.stderr, /cannot be converted: it holds no partition table and no filesystem/);
  const taken = await site.cli('convert', sources['bios']!, '--name', 'p2v-bios');
  assert.match(taken.stderr, /a VM named p2v-bios already exists.*VM_EXISTS/);
  const relative = await site.cli('convert', 'no-such.vmdk', '--name', 'nope');
  // A missing source gets the forbidden one's answer: the API tells nobody which host paths exist.
  assert.match(relative.stderr, /no-such\.vmdk" is not an image or device this site may read.*\[HOST_PATH_REFUSED\]/);
  const names = (await site.cliJson<VmView[]>('vm', 'list')).map((v) => v.name).sort();
  assert.deepEqual(names, ['p2v-bios', 'p2v-uefi', 'v2v-win']);
  assert.deepEqual((await readdir(join(site.dataDir, 'pools', 'default')).catch(() => [])).sort(), [...before].sort());
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { DiskRecord } from '../../../src/disks/disk-record.js';
import { SiteProcess } from '../../harness/site-process.js';
import { LoopDevice } from '../../harness/loop-device.js';
import { runProcess } from '../../../src/core/run-process.js';
import { verifyWriteLog, parseGuestSerial, parseSerialAcks } from '../../../src/guest/writelog-verifier.js';

/*
 * A host I/O error pauses the VM instead of failing the guest's write (werror/rerror=stop), and
 * the site resumes it after a short wait, so QEMU retries the request. The error here is a real
 * one: the VM's disk sits on a small ext4 filesystem (a loop device) that the test fills up. The
 * guest must never see the error: its write log goes on once space is freed, with every
 * acknowledged record on the disk.
 */
type Vm = Pick<VmView, 'id' | 'name' | 'state' | 'serialLog'>;
type Disk = Pick<DiskRecord, 'id' | 'path' | 'vmId'>;

let site: SiteProcess;
let loop: LoopDevice | undefined;
let mountedAt: string | undefined;
before(async () => {
  site = await SiteProcess.create('site-ioerr');
  await site.start();
});
after(async () => {
  // The QEMU and the server go first: the filesystem under the VM's disk is unmounted before the
  // site's folder is removed.
  const pids = site ? await site.vmPids().catch(() => []) : [];
  for (const pid of pids) {
    site.trackPid(pid);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await site?.crashServer();
  if (mountedAt) await runProcess('umount', ['-l', mountedAt], { timeoutMs: 30_000 }).catch(() => undefined);
  await loop?.detach();
  await site?.destroy();
});

const acks = async (vm: Vm): Promise<number[]> => parseSerialAcks(await readFile(vm.serialLog, 'utf8').catch(() => ''));

test('a full disk pauses the VM, not the guest: freed space, it resumes by itself; past the retries it waits paused, and a restarted server retries it; every record kept', async () => {
  await site.cliJson(
    'vm',
    'create',
    'full',
    '--test-guest',
    '--data-disk',
    '32M',
    '--writelog-rate',
    '20',
    '--memory',
    '96',
  );
  const disk = (await site.cliJson<Disk[]>('disk', 'list')).find((d) => d.vmId !== null);
  assert.ok(disk, 'the VM has its data disk');
  // The disk's folder moves onto a 24 MiB ext4 filesystem: room for the image as it is, and a little.
  const folder = dirname(disk.path);
  const scratch = await mkdtemp(join(site.dataDir, 'ioerr-'));
  loop = await LoopDevice.create(scratch, 'small-fs', 24);
  await runProcess('mkfs.ext4', ['-q', '-F', '-m', '0', loop.device], { timeoutMs: 60_000 });
  const staging = join(scratch, 'mnt');
  await runProcess('mkdir', ['-p', staging]);
  await runProcess('mount', [loop.device, staging], { timeoutMs: 30_000 });
  for (const name of await readdir(folder))
    await runProcess('cp', ['-a', join(folder, name), staging], { timeoutMs: 60_000 });
  await runProcess('umount', [staging], { timeoutMs: 30_000 });
  await runProcess('mount', [loop.device, folder], { timeoutMs: 30_000 });
  mountedAt = folder;

  const vm = await site.cliJson<Vm>('vm', 'start', 'full');
  await site.waitForAcks('the write log to run', vm.serialLog, 10);
  // Fill the filesystem: the guest's next write into a new cluster meets ENOSPC on the host.
  const filler = join(folder, 'filler');
  await runProcess('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64K'], { timeoutMs: 60_000, okCodes: [0, 1] });
  await site.waitFor(
    'the VM to pause on the full disk',
    async () => (await site.cliJson<Vm>('vm', 'show', 'full')).state === 'paused',
    120_000,
  );
  const atPause = (await acks(vm)).at(-1) ?? 0;
  await rm(filler);
  // No one resumes it but the site itself.
  await site.waitFor(
    'the guest to write again after the space came back',
    async () => ((await acks(vm)).at(-1) ?? 0) >= atPause + 10,
    120_000,
  );
  assert.equal((await site.cliJson<Vm>('vm', 'show', 'full')).state, 'running');
  assert.match(site.serverLog, /"reason":"No space left on device".*"msg":"QEMU met a host I\/O error"/);
  assert.deepEqual(parseGuestSerial(await readFile(vm.serialLog, 'utf8')).errors, [], 'the guest saw no error');

  // Full for good: the retries run out and the VM stays paused, saying why.
  await runProcess('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64K'], { timeoutMs: 60_000, okCodes: [0, 1] });
  const held = await site.waitFor(
    'the VM to stay paused once the retries ran out',
    async () => {
      const v = await site.cliJson<Vm & { stateReason: string | null }>('vm', 'show', 'full');
      return v.state === 'paused' && v.stateReason?.includes('paused on a host I/O error') ? v : undefined;
    },
    120_000,
  );
  assert.match(held.stateReason!, /No space left on device.*resume it once its storage is fixed/);
  const open = await site.cliJson<{ kind: string; target: string; remedy: string | null }[]>('events', '--open');
  const incident = open.find((e) => e.kind === 'vm.io-paused');
  assert.equal(incident?.target, `vm:${vm.id}`);
  assert.match(incident.remedy ?? '', /mamori vm resume full/);
  // The server goes down meanwhile; space comes back; the next server finds the VM paused on
  // the error and retries by itself.
  await site.crashServer();
  const atHold = (await acks(vm)).at(-1) ?? 0;
  await rm(filler);
  await site.start();
  await site.waitFor(
    'the guest to write again after the restart',
    async () => ((await acks(vm)).at(-1) ?? 0) >= atHold + 10,
    120_000,
  );
  const running = await site.cliJson<Vm & { stateReason: string | null }>('vm', 'show', 'full');
  assert.deepEqual([running.state, running.stateReason], ['running', null]);
  assert.ok(
    !(await site.cliJson<{ kind: string }[]>('events', '--open')).some((e) => e.kind === 'vm.io-paused'),
    'the incident cleared once the VM ran',
  );
  assert.deepEqual(parseGuestSerial(await readFile(vm.serialLog, 'utf8')).errors, [], 'the guest saw no error');

  await site.cliJson('vm', 'stop', 'full');
  const report = await verifyWriteLog(disk.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.lastSequence, (await acks(vm)).at(-1), 'the disk holds every acknowledged record');
  await site.cliJson('vm', 'delete', 'full');
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SiteProcess } from '../../harness/site-process.js';
import { verifyWriteLog, parseSerialAcks } from '../../../src/guest/writelog-verifier.js';

interface Vm {
  name: string;
  state: string;
  stateReason: string | null;
  pid: number | null;
  lastHeartbeatAt: string | null;
  serialLog: string;
  disks: { name: string; path: string }[];
}

let site: SiteProcess;
before(async () => {
  site = await SiteProcess.create();
  await site.start();
});
after(async () => {
  await site.destroy();
});

const show = (name: string): Promise<Vm> => site.cliJson<Vm>('vm', 'show', name);

test('a test-guest VM boots to heartbeat, pauses, resumes, stops cleanly, and its write log verifies', async () => {
  const created = await site.cliJson<Vm>(
    'vm',
    'create',
    'tg1',
    '--test-guest',
    '--data-disk',
    '64M',
    '--writelog-rate',
    '20',
  );
  assert.equal(created.state, 'stopped');
  const started = await site.cliJson<Vm>('vm', 'start', 'tg1');
  assert.equal(started.state, 'running');
  assert.ok(started.pid && started.pid > 0);

  const hb = await site.waitFor('first heartbeat', async () => (await show('tg1')).lastHeartbeatAt, 90_000);
  assert.ok(!Number.isNaN(Date.parse(hb)));
  const tail = await site.cliJson<{ lines: string[] }>('vm', 'console', 'tg1', '--lines', '5');
  assert.ok(tail.lines.length > 0 && tail.lines.length <= 5);
  assert.ok(
    tail.lines.some((l) => l.startsWith('mamori-')),
    tail.lines.join('\n'),
  );

  // Starting a running VM is refused and changes nothing.
  const again = await site.cli('vm', 'start', 'tg1');
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /already running.*\[VM_INVALID_STATE\]/);
  assert.equal((await show('tg1')).pid, started.pid);

  await site.cliJson('vm', 'pause', 'tg1');
  assert.equal((await show('tg1')).state, 'paused');
  await site.cliJson('vm', 'resume', 'tg1');
  assert.equal((await show('tg1')).state, 'running');

  // Let the write log run a while, then power off through the ACPI button.
  await site.waitFor(
    'write log records acknowledged',
    async () => parseSerialAcks(await readFile(started.serialLog, 'utf8')).length >= 30,
    60_000,
  );
  const stopped = await site.cliJson<{ forced: boolean; vm: Vm }>('vm', 'stop', 'tg1', '--timeout', '60');
  assert.equal(stopped.forced, false, 'the guest should shut down on the power button');
  assert.equal(stopped.vm.state, 'stopped');

  const serial = await readFile(started.serialLog, 'utf8');
  const acks = parseSerialAcks(serial);
  const report = await verifyWriteLog(created.disks[0]!.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.deepEqual(report.gaps, []);
  assert.deepEqual(report.torn, []);
  assert.equal(report.lastSequence, acks.at(-1), 'every record the guest acknowledged is on disk, and nothing more');
  assert.equal(report.gapFreePrefix, report.lastSequence);

  // The CLI's own verifier agrees.
  const cliReport = await site.cliJson<{ consistent: boolean; lastSequence: number }>(
    'verify-writelog',
    created.disks[0]!.path,
  );
  assert.equal(cliReport.consistent, true);
  assert.equal(cliReport.lastSequence, acks.at(-1));
});

test('a guest that ignores the power button is forced off after the timeout', async () => {
  await site.cliJson('vm', 'create', 'deaf', '--test-guest', '--no-acpi');
  await site.cliJson<Vm>('vm', 'start', 'deaf');
  await site.waitFor('heartbeat', async () => (await show('deaf')).lastHeartbeatAt, 90_000);
  const out = await site.cliJson<{ forced: boolean; vm: Vm }>('vm', 'stop', 'deaf', '--timeout', '3');
  assert.equal(out.forced, true);
  assert.equal(out.vm.state, 'stopped');
  assert.equal(out.vm.pid, null);
});

test('kill -9 of QEMU is detected and the VM is marked crashed', async () => {
  await site.cliJson('vm', 'create', 'victim', '--test-guest');
  const vm = await site.cliJson<Vm>('vm', 'start', 'victim');
  process.kill(vm.pid!, 'SIGKILL');
  const crashed = await site.waitFor(
    'crashed state',
    async () => {
      const v = await show('victim');
      return v.state === 'crashed' ? v : undefined;
    },
    30_000,
  );
  assert.match(crashed.stateReason ?? '', /unexpectedly/);
  // A crashed VM can be started again and deleted.
  const restarted = await site.cliJson<Vm>('vm', 'start', 'victim');
  assert.equal(restarted.state, 'running');
  const del = await site.cli('vm', 'delete', 'victim');
  assert.notEqual(del.code, 0, 'deleting a running VM needs --force');
  assert.match(del.stderr, /\[VM_RUNNING\]/);
  await site.cliJson('vm', 'delete', 'victim', '--force');
  const list = await site.cliJson<Vm[]>('vm', 'list');
  assert.ok(!list.some((v) => v.name === 'victim'));
});

test('a UEFI VM boots the test guest through OVMF with its own NVRAM', async () => {
  const vm = await site.cliJson<Vm & { firmware: string; id: string }>(
    'vm',
    'create',
    'efi',
    '--test-guest',
    '--firmware',
    'uefi',
  );
  assert.equal(vm.firmware, 'uefi');
  await site.cliJson('vm', 'start', 'efi');
  await site.waitFor('heartbeat under OVMF', async () => (await show('efi')).lastHeartbeatAt, 120_000);
  const nvram = join(site.dataDir, 'vms', vm.id, 'OVMF_VARS.fd');
  assert.ok((await stat(nvram)).size > 0, 'the VM has its own copy of the UEFI variable store');
  await site.cliJson('vm', 'delete', 'efi', '--force');
  await assert.rejects(stat(nvram), 'deleting the VM removes its NVRAM');
});

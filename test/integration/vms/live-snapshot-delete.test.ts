import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { access, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { SiteProcess } from '../../harness/site-process.js';
import { verifyWriteLog, parseSerialAcks } from '../../../src/guest/writelog-verifier.js';

/*
 * `mamori vm snapshot delete` on a running VM: the VM's own QEMU merges the snapshot's layer
 * (block-commit) while the guest keeps writing its log. A lower snapshot goes by a plain
 * commit, the newest by an active commit and pivot. Afterwards the chain is one image with
 * every acknowledged record, and the guest never stopped. Real QEMU under TCG.
 */
interface Vm {
  id: string;
  name: string;
  state: string;
  serialLog: string;
}
interface Disk {
  id: string;
  name: string;
  path: string;
  vmId?: string | null;
}

let site: SiteProcess;
before(async () => {
  site = await SiteProcess.create('site-snapdel');
  await site.start();
});
after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
});

async function acks(vm: Vm): Promise<number[]> {
  return parseSerialAcks(await readFile(vm.serialLog, 'utf8').catch(() => ''));
}
const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

test("a running VM's snapshots are deleted through its QEMU while the guest writes; no record is lost", async () => {
  await site.cliJson(
    'vm',
    'create',
    'live',
    '--test-guest',
    '--data-disk',
    '16M',
    '--writelog-rate',
    '20',
    '--memory',
    '96',
  );
  const vm = await site.cliJson<Vm>('vm', 'start', 'live');
  await site.waitFor('the write log to run', async () => (await acks(vm)).length >= 10, 120_000);
  await site.cliJson('vm', 'snapshot', 'live', 's1');
  let seen = (await acks(vm)).at(-1)!;
  await site.waitFor("writes into s1's layer", async () => ((await acks(vm)).at(-1) ?? 0) >= seen + 10, 60_000);
  await site.cliJson('vm', 'snapshot', 'live', 's2');
  seen = (await acks(vm)).at(-1)!;
  await site.waitFor("writes into s2's layer", async () => ((await acks(vm)).at(-1) ?? 0) >= seen + 10, 60_000);
  const data = (await site.cliJson<Disk[]>('disk', 'list')).find((d) => d.vmId === vm.id);
  assert.ok(data, 'the VM has its data disk');
  // Overlays sit in the disk's folder's .layers, named by disk id and snapshot (vm-snapshots.ts).
  const [ov1, ov2] = ['s1', 's2'].map((s) => join(dirname(data.path), '.layers', `${data.id}.${s}.qcow2`)) as [
    string,
    string,
  ];
  assert.ok((await exists(ov1)) && (await exists(ov2)), 'both overlays are there');

  // s1's layer lies below s2's: a plain commit into the base, s2's layer pointed past it.
  await site.cliJson('vm', 'snapshot', 'delete', 'live', 's1');
  assert.equal((await site.cliJson<Vm>('vm', 'show', 'live')).state, 'running');
  assert.equal(await exists(ov1), false, "s1's overlay file is gone");
  assert.deepEqual(
    (await site.cliJson<{ name: string }[]>('vm', 'snapshot', 'list', 'live')).map((s) => s.name),
    ['s2'],
  );
  seen = (await acks(vm)).at(-1)!;
  await site.waitFor('the guest to keep writing', async () => ((await acks(vm)).at(-1) ?? 0) >= seen + 10, 60_000);

  // s2's layer is the active one: an active commit, then the device pivots onto the base.
  await site.cliJson('vm', 'snapshot', 'delete', 'live', 's2');
  assert.equal((await site.cliJson<Vm>('vm', 'show', 'live')).state, 'running');
  assert.equal(await exists(ov2), false, "s2's overlay file is gone (QEMU closed it)");
  assert.deepEqual(await site.cliJson('vm', 'snapshot', 'list', 'live'), []);
  seen = (await acks(vm)).at(-1)!;
  await site.waitFor(
    'the guest to write into the base now',
    async () => ((await acks(vm)).at(-1) ?? 0) >= seen + 10,
    60_000,
  );

  await site.cliJson('vm', 'stop', 'live');
  const report = await verifyWriteLog(data.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.lastSequence, (await acks(vm)).at(-1), 'the base holds every acknowledged record');
  assert.equal(report.gaps.length, 0);
  await site.cliJson('vm', 'delete', 'live');
});

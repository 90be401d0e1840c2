import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SiteProcess } from '../../harness/site-process.js';
import { LoopDevice } from '../../harness/loop-device.js';
import { verifyWriteLog, parseSerialAcks } from '../../../src/guest/writelog-verifier.js';

interface Vm {
  name: string;
  state: string;
  serialLog: string;
  lastHeartbeatAt: string | null;
  disks: { name: string; kind: string; rdmMode: string | null; path: string }[];
}

let site: SiteProcess;
const loops: LoopDevice[] = [];
before(async () => {
  site = await SiteProcess.create();
  await site.start();
});
after(async () => {
  await site.destroy();
  for (const l of loops) await l.detach();
});

async function acks(vm: Vm): Promise<number[]> {
  return parseSerialAcks(await readFile(vm.serialLog, 'utf8').catch(() => ''));
}

test('physical RDM on a loop device: the guest writes the device directly, snapshots are refused', async () => {
  const lun = await LoopDevice.create(site.dataDir, 'lun-p', 64);
  loops.push(lun);
  const disk = await site.cliJson<{ id: string; kind: string; rdmMode: string; format: string }>(
    'disk',
    'create',
    'lun-p',
    '--rdm',
    lun.device,
    '--mode',
    'physical',
  );
  assert.deepEqual([disk.kind, disk.rdmMode, disk.format], ['rdm', 'physical', 'raw']);
  await site.cliJson('vm', 'create', 'rdm-p', '--test-guest', '--disk', 'lun-p', '--writelog-rate', '20');
  const vm = await site.cliJson<Vm>('vm', 'start', 'rdm-p');
  await site.waitFor('write log on the device', async () => (await acks(vm)).length >= 20, 90_000);

  const refused = await site.cli('vm', 'snapshot', 'rdm-p', 's1');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /physical-mode raw device mapping.*\[RDM_PHYSICAL_REFUSED\]/);
  assert.deepEqual(await site.cliJson('vm', 'snapshot', 'list', 'rdm-p'), []);
  const pool = join(site.dataDir, 'pools', 'default');
  const layers = [...(await readdir(pool).catch(() => [])), ...(await readdir(join(pool, '.layers')).catch(() => []))];
  assert.ok(!layers.some((f) => f.includes('lun-p') || f.includes(disk.id)), 'no overlay file was made');

  const stopped = await site.cliJson<{ forced: boolean }>('vm', 'stop', 'rdm-p');
  assert.equal(stopped.forced, false);
  // The records are on the host device itself: no image format in between.
  const report = await verifyWriteLog(lun.device);
  assert.equal(report.format, 'raw');
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.equal(report.lastSequence, (await acks(vm)).at(-1));

  // The disk is in use while its VM exists.
  const inUse = await site.cli('disk', 'delete', 'lun-p');
  assert.match(inUse.stderr, /\[DISK_IN_USE\]/);
});

test('virtual RDM: a snapshot while running layers an overlay; the device keeps the point-in-time state', async () => {
  const lun = await LoopDevice.create(site.dataDir, 'lun-v', 64);
  loops.push(lun);
  await site.cliJson('disk', 'create', 'lun-v', '--rdm', lun.device, '--mode', 'virtual');
  await site.cliJson('vm', 'create', 'rdm-v', '--test-guest', '--disk', 'lun-v', '--writelog-rate', '20');
  const vm = await site.cliJson<Vm>('vm', 'start', 'rdm-v');
  await site.waitFor('write log running', async () => (await acks(vm)).length >= 10, 90_000);

  const ackedBefore = (await acks(vm)).at(-1)!;
  const snap = await site.cliJson<{ name: string; running: boolean }>('vm', 'snapshot', 'rdm-v', 's1');
  const ackedAfter = (await acks(vm)).at(-1)!;
  assert.equal(snap.running, true);
  await site.waitFor(
    'writes after the snapshot',
    async () => ((await acks(vm)).at(-1) ?? 0) >= ackedAfter + 20,
    60_000,
  );
  await site.cliJson('vm', 'stop', 'rdm-v');

  // Overlays are named by the disk's id in the pool's .layers folder (no disk name can reach it).
  const { id } = await site.cliJson<{ id: string }>('disk', 'show', 'lun-v');
  const overlay = join(site.dataDir, 'pools', 'default', '.layers', `${id}.s1.qcow2`);
  const finalAck = (await acks(vm)).at(-1)!;
  const base = await verifyWriteLog(lun.device);
  const top = await verifyWriteLog(overlay);
  assert.equal(base.consistent, true, `device: ${JSON.stringify(base)}`);
  assert.equal(top.consistent, true, `overlay: ${JSON.stringify(top)}`);
  // The device froze at the snapshot: it holds every record acknowledged before it, none written well after.
  assert.ok(
    base.lastSequence! >= ackedBefore && base.lastSequence! <= ackedAfter + 1,
    `device last ${base.lastSequence}, acked ${ackedBefore}..${ackedAfter}`,
  );
  assert.equal(top.lastSequence, finalAck);

  // The next boot opens the whole chain (device + overlay) and the log continues on top.
  const again = await site.cliJson<Vm>('vm', 'start', 'rdm-v');
  await site.waitFor(
    'log continues after restart',
    async () => ((await acks(again)).at(-1) ?? 0) >= finalAck + 10,
    90_000,
  );
  await site.cliJson('vm', 'stop', 'rdm-v');
  const after2 = await verifyWriteLog(overlay);
  assert.equal(after2.consistent, true);
  assert.equal(after2.lastSequence, (await acks(again)).at(-1));
  assert.equal(after2.bootIds.length, 2, 'records from both boots');
  assert.equal((await verifyWriteLog(lun.device)).lastSequence, base.lastSequence, 'the snapshot stays untouched');

  await site.cliJson('vm', 'delete', 'rdm-v');
  await rm(overlay, { force: true });
});

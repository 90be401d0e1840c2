import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { SiteProcess } from '../../harness/site-process.js';

interface Vm {
  name: string;
  state: string;
  pid: number | null;
  lastHeartbeatAt: string | null;
}

let site: SiteProcess;
before(async () => {
  site = await SiteProcess.create();
  await site.start();
});
after(async () => {
  await site.destroy();
});

test('VMs outlive a kill -9 of the server and stay controllable after it restarts', async () => {
  await site.cliJson('vm', 'create', 'survivor', '--test-guest', '--data-disk', '32M');
  const vm = await site.cliJson<Vm>('vm', 'start', 'survivor');
  await site.waitFor(
    'heartbeat',
    async () => (await site.cliJson<Vm>('vm', 'show', 'survivor')).lastHeartbeatAt,
    90_000,
  );

  await site.crashServer();
  process.kill(vm.pid!, 0); // throws if QEMU died with the server

  await site.start();
  const listed = await site.cliJson<Vm[]>('vm', 'list');
  const again = listed.find((v) => v.name === 'survivor');
  assert.equal(again?.state, 'running');
  assert.equal(again?.pid, vm.pid);

  // Controllable: fresh heartbeats are seen through the new server, pause/resume work.
  const before = Date.now();
  await site.waitFor(
    'a heartbeat after restart',
    async () => {
      const hb = (await site.cliJson<Vm>('vm', 'show', 'survivor')).lastHeartbeatAt;
      return hb && Date.parse(hb) > before;
    },
    30_000,
  );
  await site.cliJson('vm', 'pause', 'survivor');
  assert.equal((await site.cliJson<Vm>('vm', 'show', 'survivor')).state, 'paused');
  await site.cliJson('vm', 'resume', 'survivor');
  const stopped = await site.cliJson<{ forced: boolean; vm: Vm }>('vm', 'stop', 'survivor');
  assert.equal(stopped.vm.state, 'stopped');
});

test('a VM whose QEMU died while the server was down is marked crashed at restart', async () => {
  await site.cliJson('vm', 'create', 'lost', '--test-guest');
  const vm = await site.cliJson<Vm>('vm', 'start', 'lost');
  await site.stopServer();
  process.kill(vm.pid!, 'SIGKILL');
  await site.start();
  const v = await site.cliJson<Vm & { stateReason: string }>('vm', 'show', 'lost');
  assert.equal(v.state, 'crashed');
  assert.match(v.stateReason, /not running/);
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { SiteProcess } from '../../harness/site-process.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * Network customization of desktops, observed in the guest. The master's NIC is on QEMU's
 * user-mode network (10.0.2.0/24: gateway 10.0.2.2, DNS 10.0.2.3, and a DHCP server), so:
 *   - static: each desktop holds its own address of the pool's range, reserved so two
 *     desktops never share one (two pools sharing a range, provisioned at once), freed when
 *     a desktop goes; the booted guest reads back the address, route and DNS it set;
 *   - DHCP: the guest runs busybox udhcpc against QEMU's DHCP server and reports its lease
 *     (QEMU's restricted user network offers no router or DNS, so only the address is seen).
 * Real QEMU under TCG.
 */
let site: SiteProcess;

before(async () => {
  site = await SiteProcess.create('site-net');
  await site.start();
  await site.cliJson(
    'vm',
    'create',
    'master',
    '--test-guest',
    '--data-disk',
    '16M',
    '--memory',
    '96',
    '--network',
    'user',
  );
  await site.cliJson('vm', 'snapshot', 'master', 'v1');
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
});

const RANGE = ['--ip-range', '10.0.2.20-10.0.2.29/24', '--gateway', '10.0.2.2', '--dns', '10.0.2.3'];
const show = (pool: string): Promise<PoolView> => site.cliJson<PoolView>('pool', 'show', pool);

async function netLine(vm: string): Promise<string> {
  const log = (await site.cliJson<VmView>('vm', 'show', vm)).serialLog;
  let line = '';
  await site.waitFor(
    `${vm} to report its network`,
    async () => {
      const text = await readFile(log, 'utf8').catch(() => '');
      line =
        text
          .split('\n')
          .map((l) => l.replace(/\r+$/, ''))
          .find((l) => /mamori-guest (net|warning no DHCP)/.test(l)) ?? '';
      return line !== '' ? true : undefined;
    },
    240_000,
  );
  return line.slice(line.indexOf('mamori-guest'));
}

test('a static range is checked before anything is made', async () => {
  const bad = async (args: string[], re: RegExp): Promise<void> => {
    const r = await site.cli(
      'pool',
      'create',
      'bad',
      '--master',
      'master',
      '--snapshot',
      'v1',
      '--name',
      'bad-{n}',
      ...args,
    );
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, re);
  };
  await bad(['--size', '11', ...RANGE], /holds 10 addresses, fewer than the pool's 11 desktops.*\[OUT_OF_RANGE\]/);
  await bad(
    ['--size', '2', '--ip-range', '10.0.2.20-10.0.2.29/24', '--gateway', '10.0.2.25'],
    /gateway 10\.0\.2\.25 lies inside the range.*\[INVALID_INPUT\]/,
  );
  await bad(
    ['--size', '2', '--ip-range', '10.0.2.250-10.0.3.5/24'],
    /is not inside 10\.0\.2\.0\/24.*\[INVALID_INPUT\]/,
  );
  await bad(['--size', '2', '--ip', 'dhcp', '--gateway', '10.0.2.2'], /a gateway and DNS go with static addresses/);
  assert.deepEqual(await site.cliJson('pool', 'list'), []);
});

test('static addresses: never one address twice, even for two pools provisioned at once; the guest sets its own', async () => {
  const [a, b] = await Promise.all(
    ['sa', 'sb'].map((p) =>
      site.cliJson<Job>(
        'pool',
        'create',
        p,
        '--master',
        'master',
        '--snapshot',
        'v1',
        '--size',
        '4',
        '--name',
        `${p}-{n}`,
        ...RANGE,
      ),
    ),
  );
  assert.equal(a!.state, 'succeeded', JSON.stringify(a!.error));
  assert.equal(b!.state, 'succeeded', JSON.stringify(b!.error));
  const held = async (): Promise<string[]> =>
    (await Promise.all(['sa', 'sb'].map(show))).flatMap((p) => p.desktops.map((d) => d.address ?? 'none'));
  const all = await held();
  assert.equal(all.length, 8);
  assert.equal(new Set(all).size, 8, `eight desktops, eight addresses: ${all.join(' ')}`);
  for (const x of all) assert.match(x, /^10\.0\.2\.(2\d)$/, 'inside the range');

  const sa1 = (await show('sa')).desktops[0]!;
  await site.cliJson('vm', 'start', sa1.name);
  const line = await netLine(sa1.name);
  assert.equal(
    line,
    `mamori-guest net eth0 addr=${sa1.address}/24 router=10.0.2.2 dns=10.0.2.3`,
    'the guest holds the address, route and DNS of its seed',
  );
  await site.cliJson('vm', 'kill', sa1.name);

  // Addresses go with their desktops: shrinking sa frees two, which a third pool then takes.
  assert.equal((await site.cliJson<Job>('pool', 'resize', 'sa', '--size', '2')).state, 'succeeded');
  assert.equal((await held()).length, 6);
  const c = await site.cliJson<Job>(
    'pool',
    'create',
    'sc',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '4',
    '--name',
    'sc-{n}',
    ...RANGE,
  );
  assert.equal(c.state, 'succeeded', JSON.stringify(c.error));
  const ten = [...(await held()), ...(await show('sc')).desktops.map((d) => d.address ?? 'none')];
  assert.equal(new Set(ten).size, 10, `the whole range, each address once: ${ten.join(' ')}`);
  // The range is full now: one more desktop is refused, and no address is held twice.
  const r = await site.cli('pool', 'resize', 'sc', '--size', '5', '--json');
  assert.notEqual(r.code, 0);
  const more = JSON.parse(r.stdout) as Job;
  assert.equal(more.state, 'failed');
  assert.equal(more.error?.code, 'POOL_ADDRESSES_EXHAUSTED', JSON.stringify(more.error));
  assert.equal((await show('sc')).desktops.length, 4);
  for (const p of ['sa', 'sb', 'sc']) assert.equal((await site.cliJson<Job>('pool', 'delete', p)).state, 'succeeded');
});

test("DHCP: the guest takes a lease from the network's DHCP server", async () => {
  const job = await site.cliJson<Job>(
    'pool',
    'create',
    'dh',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '1',
    '--name',
    'dh-{n}',
    '--ip',
    'dhcp',
  );
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  const d = (await show('dh')).desktops[0]!;
  assert.equal(d.address, null, 'no address is reserved for a DHCP desktop');
  await site.cliJson('vm', 'start', d.name);
  // QEMU's user-mode DHCP server hands out 10.0.2.15 first. mamori runs it with restrict=on
  // (no way out of the host), and then it offers no router and no DNS server: none is set.
  assert.equal(await netLine(d.name), 'mamori-guest net eth0 dhcp addr=10.0.2.15/24 router= dns=');
  assert.equal((await site.cliJson<Job>('pool', 'delete', 'dh')).state, 'succeeded');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addressAt, poolNetworkOf, rangeSize } from '../../../src/pools/pool-network.js';
import { noCloudFiles } from '../../../src/guest/nocloud-drive.js';

test('a static range is checked: inside its prefix, clear of the gateway, room for the pool', () => {
  const net = poolNetworkOf(
    { mode: 'static', range: '10.0.5.10-10.0.5.200/24', gateway: '10.0.5.1', dns: ['10.0.5.2', '9.9.9.9'] },
    191,
  );
  assert.deepEqual(net, {
    mode: 'static',
    first: '10.0.5.10',
    last: '10.0.5.200',
    prefix: 24,
    gateway: '10.0.5.1',
    dns: ['10.0.5.2', '9.9.9.9'],
  });
  assert.equal(net.mode === 'static' && rangeSize(net), 191);
  assert.equal(net.mode === 'static' && addressAt(net, 190), '10.0.5.200');
  assert.deepEqual(poolNetworkOf({ mode: 'dhcp' }, 2000), { mode: 'dhcp' });
  const no = (input: unknown, re: RegExp, size = 2): void => assert.throws(() => poolNetworkOf(input, size), re);
  no(
    { mode: 'static', range: '10.0.5.10-10.0.5.200/24' },
    /holds 191 addresses, fewer than the pool's 192 desktops/,
    192,
  );
  no({ mode: 'static', range: '10.0.5.10-10.0.6.20/24' }, /is not inside 10\.0\.5\.0\/24/);
  no({ mode: 'static', range: '10.0.5.0-10.0.5.20/24' }, /network address/);
  no({ mode: 'static', range: '10.0.5.10-10.0.5.255/24' }, /broadcast address/);
  no({ mode: 'static', range: '10.0.5.20-10.0.5.10/24' }, /ends before it starts/);
  no({ mode: 'static', range: '10.0.5.10-10.0.5.20/24', gateway: '10.0.5.15' }, /lies inside the range/);
  no({ mode: 'static', range: '10.0.5.10-10.0.5.20/24', gateway: '10.0.6.1' }, /is not a host of 10\.0\.5\.0\/24/);
  no({ mode: 'static', range: '10.0.5.10-10.0.5.20/24', dns: ['dns.example'] }, /dns must list up to 3 IPv4 addresses/);
  no({ mode: 'static', range: '10.0.5.010-10.0.5.20/24' }, /must name two IPv4 addresses/);
  no({ mode: 'static', range: '10.0.5.10-10.0.5.20/31' }, /from \/8 to \/30/);
  no({ mode: 'static', range: '10.0.5.10-10.0.5.20' }, /is not FIRST-LAST\/PREFIX/);
  no({ mode: 'dhcp', range: '10.0.5.10-10.0.5.20/24' }, /DHCP takes no range/);
  no({ mode: 'bootp' }, /mode must be dhcp or static/);
});

test('the seed asks for DHCP, or carries the address with its gateway and DNS', () => {
  const dhcp = noCloudFiles({
    instanceId: 'i',
    hostname: 'h',
    interfaces: [{ mac: '52:54:00:00:00:01', address: 'dhcp' }],
  })['network-config'];
  assert.match(dhcp, /macaddress: "52:54:00:00:00:01"\n {4}set-name: nic0\n {4}dhcp4: true\n/);
  assert.doesNotMatch(dhcp, /addresses/);
  const fixed = noCloudFiles({
    instanceId: 'i',
    hostname: 'h',
    interfaces: [{ mac: '52:54:00:00:00:02', address: '10.0.5.10/24', gateway: '10.0.5.1', dns: ['10.0.5.2'] }],
  })['network-config'];
  assert.match(
    fixed,
    / {4}addresses: \[10\.0\.5\.10\/24\]\n {4}gateway4: 10\.0\.5\.1\n {4}nameservers:\n {6}addresses: \[10\.0\.5\.2\]\n/,
  );
});

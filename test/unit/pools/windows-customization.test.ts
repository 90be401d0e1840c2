import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desktopNames, poolSpecOf, type PoolCreateInput } from '../../../src/pools/pool-spec.js';
import type { PoolSpec } from '../../../src/store/repos/pool-records.js';
import { customizationState } from '../../../src/pools/desktop-customization.js';
import { splitHostPort, windowsCustomizationScript } from '../../../src/pools/windows-customization.js';

const input = (over: Partial<PoolCreateInput> = {}): PoolCreateInput => ({
  name: 'w',
  master: 'gold',
  snapshot: 'v1',
  size: 2,
  namePattern: 'win-{n}',
  ...over,
});
const master = { id: 'id', name: 'gold' };
const windowsSpec = (over: Partial<PoolCreateInput> = {}): PoolSpec =>
  poolSpecOf(input({ kmsHost: 'kms.lab:1700', licenseTimeoutSec: 45, ...over }), master, 'windows');

test('KMS hosts: HOST, HOST:PORT, [V6]:PORT; Windows masters only; a Windows master takes no registration command', () => {
  assert.equal(windowsSpec().kmsHost, 'kms.lab:1700');
  assert.deepEqual(splitHostPort('kms.lab'), ['kms.lab', 1688]);
  assert.deepEqual(splitHostPort('10.0.0.5:1700'), ['10.0.0.5', 1700]);
  assert.deepEqual(splitHostPort('[fd00::5]:1688'), ['fd00::5', 1688]);
  assert.equal(poolSpecOf(input({ kmsHost: '[fd00::5]:1688' }), master, 'windows').kmsHost, '[fd00::5]:1688');
  for (const bad of ['kms lab', 'kms.lab:0', 'kms.lab:70000', 'http://kms', '-kms', '']) {
    assert.throws(
      () => poolSpecOf(input({ kmsHost: bad }), master, 'windows'),
      /is not HOST, HOST:PORT or \[IPV6\]:PORT/,
      bad,
    );
  }
  assert.throws(
    () => poolSpecOf(input({ kmsHost: 'kms.lab' }), master, 'linux'),
    /KMS activation is for Windows desktops, and the master's snapshot holds Linux/,
  );
  assert.throws(() => poolSpecOf(input({ kmsHost: 'kms.lab' }), master, 'unknown'), /holds no OS mamori recognizes/);
  assert.throws(
    () => poolSpecOf(input({ licenseCommand: 'register' }), master, 'windows'),
    /activates through KMS: give --kms-host/,
  );
  assert.equal(poolSpecOf(input({ licenseCommand: 'register' }), master, 'linux').licenseCommand, 'register');
});

test('Windows desktop names are NetBIOS names: 15 characters at most', () => {
  assert.deepEqual(desktopNames('win10-desk-{n:3}', [1], 'windows'), ['win10-desk-001']);
  assert.throws(
    () => desktopNames('windows-desk-{n:3}', [1], 'windows'),
    /gives windows-desk-001, longer than the 15 characters/,
  );
  assert.deepEqual(
    desktopNames('windows-desk-{n:3}', [1], 'linux'),
    ['windows-desk-001'],
    'Linux host names may be longer',
  );
});

test('the PowerShell customization: commands through .cmd files, then KMS reachability, slmgr /skms and /ato within the timeout', () => {
  const s = windowsCustomizationScript(
    windowsSpec({ commands: ["echo it's > C:\\x.txt", 'net user a /add'] }),
    'win-1',
  );
  assert.ok(
    s.startsWith('#ps1_sysnative\r\n'),
    'cloudbase-init runs user-data with this first line as 64-bit PowerShell',
  );
  assert.match(s, /Say 'start win-1'/);
  assert.match(
    s,
    /Set-Content -Path \$f -Value 'echo it''s > C:\\x\.txt' -Encoding ASCII/,
    "a ' is doubled inside PowerShell's single quotes",
  );
  assert.match(s, /\$kmsHost = 'kms\.lab'; \$kmsPort = 1700; \$limit = 45/);
  assert.match(s, /cause=kms-unreachable/);
  const order = ['mamori-cmd-1.cmd', 'mamori-cmd-2.cmd', 'ConnectAsync', '/skms', "'/ato'", "Say 'done'"].map((x) =>
    s.indexOf(x),
  );
  assert.ok(
    order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)),
    `steps in order: ${order.join(',')}`,
  );
  assert.ok(
    s.split('\r\n').every((l) => !l.includes('\n')),
    'CRLF lines throughout',
  );
  const skipped = windowsCustomizationScript(windowsSpec({ skipLicenseActivation: true }), 'win-2');
  assert.doesNotMatch(skipped, /slmgr|ConnectAsync/);
  assert.match(skipped, /Say 'done'/);
});

test("a failed KMS activation reads as View Composer's message, with the cause and the remedy", () => {
  const spec = windowsSpec();
  const unreachable = customizationState(
    'mamori-guest customize start win-1\r\nmamori-guest customize license-failed cause=kms-unreachable seconds=10 timeout=45 output=no TCP connection to kms.lab:1700\r\n',
    true,
    spec,
  );
  assert.equal(unreachable.state, 'customization-failed');
  assert.match(
    unreachable.message!,
    /^Failed to activate software license: the KMS host kms\.lab:1700 is unreachable from the desktop \(no TCP connection to port 1700\)\. Check that the desktops reach the KMS host on TCP 1700 .*--skip-license-activation/,
  );
  const slow = customizationState(
    'mamori-guest customize license-failed cause=timeout seconds=45 timeout=45 output=\n',
    true,
    spec,
  );
  assert.match(slow.message!, /activation against the KMS host kms\.lab:1700 did not finish within 45 s/);
  const refused = customizationState(
    'mamori-guest customize license-failed cause=exit-0 seconds=3 timeout=45 output=Error: 0xC004F074 The Software Licensing Service reported that the computer could not be activated.\n',
    true,
    spec,
  );
  assert.match(
    refused.message!,
    /slmgr \/ato against the KMS host kms\.lab:1700 failed \(exit-0\) after 3 s: Error: 0xC004F074/,
  );
  assert.deepEqual(
    customizationState('mamori-guest customize license-activated seconds=2\nmamori-guest customize done\n', true, spec),
    { state: 'ready', message: null },
  );
});

import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { vsphereGuestOs } from '../../../src/convert/vsphere-guest-os.js';
import type { InspectedOs } from '../../../src/inspect/inspector.js';
import { buildOvf, parseOvf } from '../../../src/convert/ovf-descriptor.js';

const base: InspectedOs = {
  type: 'unknown',
  distro: null,
  product: null,
  major: null,
  minor: null,
  hostname: null,
  root: null,
  kernels: [],
};
const linux = (distro: string, major: number | null, product: string | null = null): InspectedOs => ({
  ...base,
  type: 'linux',
  distro,
  major,
  minor: 0,
  product,
  root: 1,
});
const windows = (
  product: string,
  major: number,
  minor: number,
  build: string,
  installationType: string,
): InspectedOs => ({
  ...base,
  type: 'windows',
  distro: 'windows',
  product,
  major,
  minor,
  build,
  installationType,
  root: 1,
  virtioDrivers: [],
});

describe('vSphere guest ids from the inspected guest', () => {
  const cases: [string, InspectedOs, string][] = [
    [
      'Windows Server 2008 R2',
      windows('Windows Server 2008 R2 Standard', 6, 1, '7601', 'Server'),
      'windows7Server64Guest',
    ],
    [
      'Windows Server 2012 R2',
      windows('Windows Server 2012 R2 Standard', 6, 3, '9600', 'Server'),
      'windows8Server64Guest',
    ],
    [
      'Windows Server 2016',
      windows('Windows Server 2016 Datacenter', 10, 0, '14393', 'Server'),
      'windows9Server64Guest',
    ],
    [
      'Windows Server 2019',
      windows('Windows Server 2019 Standard', 10, 0, '17763', 'Server'),
      'windows2019srv_64Guest',
    ],
    [
      'Windows Server 2019 Core',
      windows('Windows Server 2019 Datacenter', 10, 0, '17763', 'Server Core'),
      'windows2019srv_64Guest',
    ],
    [
      'Windows Server 2022',
      windows('Windows Server 2022 Standard', 10, 0, '20348', 'Server'),
      'windows2019srvNext_64Guest',
    ],
    [
      'Windows Server 2025',
      windows('Windows Server 2025 Standard', 10, 0, '26100', 'Server'),
      'windows2022srvNext_64Guest',
    ],
    ['Windows 7', windows('Windows 7 Professional', 6, 1, '7601', 'Client'), 'windows7_64Guest'],
    ['Windows 8.1', windows('Windows 8.1 Pro', 6, 3, '9600', 'Client'), 'windows8_64Guest'],
    ['Windows 10', windows('Windows 10 Pro', 10, 0, '19045', 'Client'), 'windows9_64Guest'],
    // Windows 11 calls itself Windows 10 in its registry: the build tells.
    ['Windows 11', windows('Windows 10 Pro', 10, 0, '22631', 'Client'), 'windows11_64Guest'],
    ['Debian 11', linux('debian', 11, 'Debian GNU/Linux 11 (bullseye)'), 'debian11_64Guest'],
    ['Debian 12', linux('debian', 12), 'debian12_64Guest'],
    ['Debian 13 (newer than vSphere knows)', linux('debian', 13), 'debian12_64Guest'],
    ['Ubuntu 22.04', linux('ubuntu', 22), 'ubuntu64Guest'],
    ['RHEL 6', linux('rhel', 6), 'rhel6_64Guest'],
    ['RHEL 8', linux('rhel', 8), 'rhel8_64Guest'],
    ['CentOS 7', linux('centos', 7), 'centos7_64Guest'],
    ['Oracle Linux 8', linux('oraclelinux', 8), 'oracleLinux8_64Guest'],
    ['SLES 15', linux('sles', 15), 'sles15_64Guest'],
    ['Fedora', linux('fedora', 39), 'fedora64Guest'],
    ['Rocky', linux('rocky', 9), 'rockylinux_64Guest'],
    ['Alpine (no vSphere id of its own)', linux('alpinelinux', 3), 'otherLinux64Guest'],
    ['a Debian without a version', linux('debian', null), 'otherLinux64Guest'],
    ['no guest OS found', base, 'otherLinux64Guest'],
  ];
  for (const [name, os, id] of cases) it(`${name} -> ${id}`, () => assert.equal(vsphereGuestOs(os).vmwOsType, id));

  it('goes into the OVF descriptor and reads back', () => {
    const os = vsphereGuestOs(windows('Windows Server 2019 Standard', 10, 0, '17763', 'Server'));
    const xml = buildOvf({
      name: 'w',
      vcpus: 2,
      memoryMiB: 2048,
      firmware: 'uefi',
      os,
      disks: [{ href: 'w-disk0.vmdk', capacityBytes: 1 << 30 }],
      nics: [],
    });
    assert.match(xml, /vmw:osType="windows2019srv_64Guest"/);
    assert.equal(parseOvf(xml).os?.vmwOsType, 'windows2019srv_64Guest');
    assert.equal(parseOvf(xml).os?.description, 'Windows Server 2019 Standard (64-bit)');
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDiskbench } from '../../../src/disks/storage-bench.js';

const names = ['bench-x-qcow2', 'bench-x-raw', 'bench-x-rdm-virtual', 'bench-x-rdm-physical'];
const line = (dev: string, n: number): string =>
  `mamori-guest diskbench dev=${dev} size_mib=64 seq_write_mbps=${n}.5 seq_read_mbps=${n + 1}.0 rand_write_iops=${n * 10}.0 rand_read_iops=${n * 20}.0`;

test("the guest's lines map onto the disks in attachment order", () => {
  const serial = [
    'booting',
    line('vda', 1),
    line('vdb', 2),
    line('vdc', 3),
    line('vdd', 4),
    'mamori-guest diskbench done',
  ].join('\n');
  const k = parseDiskbench(serial, names, 'bench-x');
  assert.deepEqual(k.qcow2, { seq_read_mbps: 2, seq_write_mbps: 1.5, rand_read_iops: 20, rand_write_iops: 10 });
  assert.deepEqual(k['rdm-physical'], {
    seq_read_mbps: 5,
    seq_write_mbps: 4.5,
    rand_read_iops: 80,
    rand_write_iops: 40,
  });
});

test('a disk the guest could not measure, or a missing line, is an error', () => {
  assert.throws(
    () =>
      parseDiskbench(
        [line('vda', 1), 'mamori-guest diskbench dev=vdb error=device_smaller_than_64_MiB'].join('\n'),
        names,
        'bench-x',
      ),
    /the guest benchmark failed: .*device_smaller/,
  );
  assert.throws(
    () => parseDiskbench([line('vda', 1), line('vdb', 2)].join('\n'), names, 'bench-x'),
    /reported 2 disks of 4/,
  );
});

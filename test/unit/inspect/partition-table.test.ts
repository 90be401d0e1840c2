import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { bufferReader } from '../../../src/inspect/byte-reader.js';
import { guidText, readPartitionTable } from '../../../src/inspect/partition-table.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-pt-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A disk image of `mib` MiB partitioned by an sfdisk script, read into memory. */
async function sfdiskDisk(name: string, mib: number, script: string): Promise<Buffer> {
  const p = join(dir, name);
  await writeFile(p, '');
  await truncate(p, mib * 1024 * 1024);
  await runProcess('sfdisk', ['-q', p], { input: script });
  return readFile(p);
}

test('GUIDs read mixed-endian as UEFI stores them', () => {
  const raw = Buffer.from('28732ac11ff8d211ba4b00a0c93ec93b', 'hex');
  assert.equal(guidText(raw), 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b');
});

test('MBR: primaries, the extended chain of logical partitions numbered from 5, active flag, disk id', async () => {
  const disk = await sfdiskDisk(
    'mbr.img',
    64,
    [
      'label: dos',
      'label-id: 0xdeadbeef',
      'start=2048, size=20480, type=83, bootable',
      'start=22528, type=f',
      'start=24576, size=8192, type=82',
      'start=34816, size=8192, type=8e',
      'start=45056, size=4096, type=7',
    ].join('\n') + '\n',
  );
  const t = await readPartitionTable(bufferReader(disk));
  assert.equal(t.type, 'mbr');
  assert.equal(t.diskId, '0xdeadbeef');
  assert.deepEqual(
    t.partitions.map((p) => [p.number, p.start / 512, p.size / 512, p.type, p.kind, p.bootable]),
    [
      [1, 2048, 20480, 'Linux', 'primary', true],
      [2, 22528, 131072 - 22528, 'W95 Extended (LBA)', 'extended', false],
      [5, 24576, 8192, 'Linux swap', 'logical', false],
      [6, 34816, 8192, 'Linux LVM', 'logical', false],
      [7, 45056, 4096, 'NTFS/exFAT', 'logical', false],
    ],
  );
  assert.deepEqual(t.warnings, []);
});

test('MBR: an EBR chain that loops is cut with a warning, not followed forever', async () => {
  const disk = await sfdiskDisk(
    'loop.img',
    32,
    'label: dos\nstart=2048, type=5\nstart=4096, size=2048, type=83\nstart=8192, size=2048, type=83\n',
  );
  // The second EBR's link points back at the first: relative start 0 of the extended partition.
  const firstEbr = 2048 * 512;
  const secondLink = disk.readUInt32LE(firstEbr + 462 + 8);
  const secondEbr = (2048 + secondLink) * 512;
  disk.writeUInt8(0x05, secondEbr + 462 + 4);
  disk.writeUInt32LE(0, secondEbr + 462 + 8);
  disk.writeUInt32LE(2048, secondEbr + 462 + 12);
  const t = await readPartitionTable(bufferReader(disk));
  assert.deepEqual(
    t.partitions.map((p) => p.number),
    [1, 5, 6],
  );
  assert.match(t.warnings.join('\n'), /chain of logical partitions loops at sector 2048/);
});

test('GPT: names, types, unique GUIDs; a damaged backup or a truncated disk is reported, both headers damaged yields none', async () => {
  const disk = await sfdiskDisk(
    'gpt.img',
    32,
    'label: gpt\nlabel-id: 11111111-2222-3333-4444-555555555555\nstart=2048, size=8192, type=21686148-6449-6E6F-744E-656564454649, name="bios"\nstart=10240, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root", uuid=AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE\n',
  );
  const t = await readPartitionTable(bufferReader(disk));
  assert.equal(t.type, 'gpt');
  assert.equal(t.diskId, '11111111-2222-3333-4444-555555555555');
  // Partition 1's GUID was made up by sfdisk: ask sfdisk for it, not the reader under test.
  const madeUp = (await runProcess('sfdisk', ['--part-uuid', join(dir, 'gpt.img'), '1'])).stdout.trim().toLowerCase();
  assert.match(madeUp, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.deepEqual(
    t.partitions.map((p) => [p.number, p.start / 512, p.size / 512, p.type, p.name, p.uuid]),
    [
      [1, 2048, 8192, 'BIOS boot', 'bios', madeUp],
      [2, 10240, 20480, 'Linux filesystem', 'root', 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee'],
    ],
  );
  assert.deepEqual(t.gpt, { header: 'primary', primaryOk: true, backupOk: true });

  // Cut the disk short: the backup header is gone and the table says the disk was longer.
  const short = disk.subarray(0, 12 * 1024 * 1024);
  const ts = await readPartitionTable(bufferReader(short));
  assert.deepEqual(ts.gpt, { header: 'primary', primaryOk: true, backupOk: false });
  assert.match(ts.warnings.join('\n'), /backup GPT header at LBA \d+ is damaged/);
  assert.match(ts.warnings.join('\n'), /partition 2 ends past the end of the disk .* truncated/);

  // Damage the primary's entry array: its CRC no longer matches, so the backup's entries are used.
  const entries = Buffer.from(disk);
  entries[1024 + 56] = entries[1024 + 56]! ^ 0x20;
  const te = await readPartitionTable(bufferReader(entries));
  assert.equal(te.gpt!.header, 'backup');
  assert.match(
    te.warnings[0]!,
    /primary GPT header is damaged \(entry array CRC-32 mismatch\); the backup header at LBA 65535 was used/,
  );
  assert.equal(te.partitions[1]!.name, 'root');

  // Both headers damaged: no partitions can be trusted, and it says so.
  const both = Buffer.from(disk);
  both[512 + 60] = both[512 + 60]! ^ 1;
  both[both.length - 512 + 60] = both[both.length - 512 + 60]! ^ 1;
  const tb = await readPartitionTable(bufferReader(both));
  assert.equal(tb.type, 'gpt');
  assert.deepEqual(tb.partitions, []);
  assert.match(tb.warnings[0]!, /both GPT headers are damaged/);
});

test('no table: a blank disk, and a filesystem written over the whole disk', async () => {
  assert.equal((await readPartitionTable(bufferReader(Buffer.alloc(1024 * 1024)))).type, 'none');
  const p = join(dir, 'whole-fat.img');
  await writeFile(p, '');
  await truncate(p, 32 * 1024 * 1024);
  await runProcess('mkfs.fat', ['-F', '16', p]);
  assert.equal((await readPartitionTable(bufferReader(await readFile(p)))).type, 'none');
});

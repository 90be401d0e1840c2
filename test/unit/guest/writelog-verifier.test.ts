import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { runProcess } from '../../../src/core/run-process.js';
import { encodeRecord, WL_RECORD_SIZE } from '../../../src/guest/writelog-format.js';
import { verifyWriteLog } from '../../../src/guest/writelog-verifier.js';

const BOOT_A = '11111111-2222-4333-8444-555555555555';
const BOOT_B = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
const T0 = 1_800_000_000_000_000_000n;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-wl-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A raw image of `slots` slots holding records 1..count (boot B from `bootSwitch` on). */
async function craft(name: string, slots: number, count: number, bootSwitch = Infinity): Promise<string> {
  const img = Buffer.alloc(slots * WL_RECORD_SIZE);
  for (let seq = 1; seq <= count; seq++) {
    encodeRecord({ seq, timeNs: T0 + BigInt(seq) * 50_000_000n, bootId: seq >= bootSwitch ? BOOT_B : BOOT_A }).copy(
      img,
      (seq - 1) * WL_RECORD_SIZE,
    );
  }
  const path = join(dir, name);
  await writeFile(path, img);
  return path;
}

async function patch(path: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

test('a valid log is consistent and reports its prefix, boots and last time', async () => {
  const path = await craft('valid.raw', 256, 100, 61);
  const r = await verifyWriteLog(path);
  assert.equal(r.format, 'raw');
  assert.equal(r.recordSize, 4096);
  assert.equal(r.slotsScanned, 256);
  assert.equal(r.records, 100);
  assert.equal(r.firstSequence, 1);
  assert.equal(r.lastSequence, 100);
  assert.equal(r.gapFreePrefix, 100);
  assert.deepEqual(r.gaps, []);
  assert.deepEqual(r.torn, []);
  assert.deepEqual(r.bootIds, [BOOT_A, BOOT_B]);
  assert.equal(r.consistent, true);
  assert.equal(r.lastTime, new Date(Number((T0 + 100n * 50_000_000n) / 1_000_000n)).toISOString());
  assert.doesNotThrow(() => JSON.stringify(r));
});

test('a flipped byte is a torn record, and the seqs after it leave a gap', async () => {
  const path = await craft('torn.raw', 256, 100);
  await patch(path, 49 * WL_RECORD_SIZE + 777, Buffer.from([0xa5]));
  const r = await verifyWriteLog(path);
  assert.deepEqual(r.torn, [{ slot: 49, seq: 50, reason: 'bad-crc' }]);
  assert.deepEqual(r.gaps, [{ from: 50, to: 50 }]);
  assert.equal(r.gapFreePrefix, 49);
  assert.equal(r.lastSequence, 100);
  assert.equal(r.records, 99);
  assert.equal(r.consistent, false);
});

test('a zeroed slot in the middle is a gap, not a torn record', async () => {
  const path = await craft('gap.raw', 256, 100);
  await patch(path, 29 * WL_RECORD_SIZE, Buffer.alloc(3 * WL_RECORD_SIZE));
  const r = await verifyWriteLog(path);
  assert.deepEqual(r.gaps, [{ from: 30, to: 32 }]);
  assert.deepEqual(r.torn, []);
  assert.equal(r.gapFreePrefix, 29);
  assert.equal(r.records, 97);
  assert.equal(r.consistent, false);
});

test('a torn last record (crash mid-write) keeps the prefix but is not consistent', async () => {
  const path = await craft('tail.raw', 256, 40);
  const partial = encodeRecord({ seq: 41, timeNs: T0, bootId: BOOT_A }).subarray(0, 1024);
  await patch(path, 40 * WL_RECORD_SIZE, partial);
  const r = await verifyWriteLog(path);
  assert.equal(r.gapFreePrefix, 40);
  assert.equal(r.lastSequence, 40);
  assert.deepEqual(r.gaps, []);
  assert.deepEqual(r.torn, [{ slot: 40, seq: 41, reason: 'bad-crc' }]);
  assert.equal(r.consistent, false);
});

test('garbage after the prefix and a missing first record are reported', async () => {
  const path = await craft('garbage.raw', 64, 10);
  await patch(path, 20 * WL_RECORD_SIZE + 5, Buffer.from('junk'));
  await patch(path, 0, Buffer.alloc(WL_RECORD_SIZE));
  const r = await verifyWriteLog(path);
  assert.deepEqual(r.torn, [{ slot: 20, seq: null, reason: 'garbage' }]);
  assert.deepEqual(r.gaps, [{ from: 1, to: 1 }]);
  assert.equal(r.gapFreePrefix, 0);
  assert.equal(r.firstSequence, 2);
  assert.equal(r.consistent, false);
});

test('an empty disk is consistent with nothing in it', async () => {
  const path = join(dir, 'empty.raw');
  await writeFile(path, Buffer.alloc(16 * WL_RECORD_SIZE));
  const r = await verifyWriteLog(path);
  assert.equal(r.records, 0);
  assert.equal(r.firstSequence, null);
  assert.equal(r.lastSequence, null);
  assert.equal(r.gapFreePrefix, 0);
  assert.equal(r.lastTime, null);
  assert.equal(r.consistent, true);
});

test('a full device is read up to its end and no further', async () => {
  const path = await craft('full.raw', 32, 32);
  // A trailing partial slot cannot hold a record: it is not scanned.
  await patch(path, 32 * WL_RECORD_SIZE, Buffer.alloc(512, 0xff));
  const r = await verifyWriteLog(path);
  assert.equal(r.slotsScanned, 32);
  assert.equal(r.lastSequence, 32);
  assert.equal(r.consistent, true);
});

test('qcow2 images are read through qemu-img and give the same report', async () => {
  const raw = await craft('src.raw', 1024, 300, 200);
  await patch(raw, 149 * WL_RECORD_SIZE + 9, Buffer.from([0x00, 0x01]));
  const qcow2 = join(dir, 'copy.qcow2');
  await runProcess('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  const [a, b] = await Promise.all([verifyWriteLog(raw), verifyWriteLog(qcow2, { tempDir: dir })]);
  assert.equal(b.format, 'qcow2');
  assert.deepEqual({ ...b, image: a.image, format: 'raw' }, a);
  assert.equal(b.lastSequence, 300);
  assert.deepEqual(
    b.torn.map((t) => t.slot),
    [149],
  );
  assert.deepEqual(b.bootIds, [BOOT_A, BOOT_B]);
});

test('a qcow2 overlay is read with its backing chain', async () => {
  const base = await craft('base.raw', 256, 50);
  const baseQ = join(dir, 'base.qcow2');
  const top = join(dir, 'top.qcow2');
  await runProcess('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', base, baseQ]);
  await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', baseQ, '-F', 'qcow2', top]);
  const r = await verifyWriteLog(top);
  assert.equal(r.lastSequence, 50);
  assert.equal(r.consistent, true);
});

test('a missing image is IMAGE_NOT_FOUND; a file qemu-img cannot open is IMAGE_UNREADABLE', async () => {
  await assert.rejects(verifyWriteLog(join(dir, 'nope.raw')), (e) => isMamoriError(e, 'IMAGE_NOT_FOUND'));
  const broken = join(dir, 'broken.qcow2');
  const header = Buffer.alloc(512);
  header.write('QFI\xfb', 0, 'latin1');
  header.writeUInt32BE(3, 4); // version 3, then nonsense
  header.writeUInt32BE(99, 20); // cluster_bits out of range
  await writeFile(broken, header);
  await assert.rejects(verifyWriteLog(broken), (e) => isMamoriError(e, 'IMAGE_UNREADABLE'));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { WL_TEXT_PHRASES, WL_TEXT_WORDS } from '../../../src/guest/writelog-text-payload.js';
import {
  bootIdToBytes,
  bytesToBootId,
  decodeSlot,
  encodeRecord,
  WL_CRC_OFFSET,
  WL_PAYLOAD_OFFSET,
  WL_PAYLOAD_WORDS,
  WL_RECORD_SIZE,
  writeLogPayload,
  writeLogPayloadOf,
} from '../../../src/guest/writelog-format.js';

const BOOT = '15c1dd0f-a454-4e32-8c2e-7b3cf2922b99';

/** The payload rule written the obvious (slow) way, to check the 32-bit-halves version. */
function referencePayload(seq: number): Buffer {
  const mask = (1n << 64n) - 1n;
  let state = (BigInt(seq) * 0x9e3779b97f4a7c15n) & mask;
  const out = Buffer.alloc(WL_PAYLOAD_WORDS * 8);
  for (let i = 0; i < WL_PAYLOAD_WORDS; i++) {
    state ^= (state << 13n) & mask;
    state ^= state >> 7n;
    state ^= (state << 17n) & mask;
    out.writeBigUInt64LE(state, i * 8);
  }
  return out;
}

test('the payload matches the 64-bit xorshift rule for small, large and wrapping seqs', () => {
  for (const seq of [1, 2, 3, 255, 4096, 16384, 1_000_003, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
    assert.deepEqual(writeLogPayload(seq), referencePayload(seq), `seq ${seq}`);
  }
});

test('the layout: magic, version, size, seq, time, boot id, payload, CRC-32 of bytes 0..4087, zero tail', () => {
  const rec = encodeRecord({ seq: 7, timeNs: 1_700_000_000_123_456_789n, bootId: BOOT });
  assert.equal(rec.length, WL_RECORD_SIZE);
  assert.equal(rec.subarray(0, 8).toString('ascii'), 'MAMORIWL');
  assert.equal(rec.readUInt32LE(8), 1);
  assert.equal(rec.readUInt32LE(12), 4096);
  assert.equal(rec.readBigUInt64LE(16), 7n);
  assert.equal(rec.readBigUInt64LE(24), 1_700_000_000_123_456_789n);
  assert.equal(rec.subarray(32, 48).toString('hex'), BOOT.replace(/-/g, ''));
  assert.deepEqual(rec.subarray(WL_PAYLOAD_OFFSET, WL_CRC_OFFSET), referencePayload(7));
  assert.equal(rec.readUInt32LE(WL_CRC_OFFSET), crc32(rec.subarray(0, WL_CRC_OFFSET)));
  assert.equal(rec.readUInt32LE(4092), 0);
});

test('decodeSlot returns the record for an intact slot', () => {
  const rec = encodeRecord({ seq: 3, timeNs: 42n, bootId: BOOT });
  assert.deepEqual(decodeSlot(rec, 2), { kind: 'valid', record: { seq: 3, timeNs: 42n, bootId: BOOT } });
});

test('decodeSlot tells empty, torn, misplaced and garbage slots apart', () => {
  assert.deepEqual(decodeSlot(Buffer.alloc(WL_RECORD_SIZE), 0), { kind: 'empty' });

  const flipped = encodeRecord({ seq: 5, timeNs: 1n, bootId: BOOT });
  flipped[1000] = (flipped[1000] as number) ^ 0x01;
  assert.deepEqual(decodeSlot(flipped, 4), { kind: 'torn', seq: 5, reason: 'bad-crc' });

  // A torn write: the first sectors are new, the rest still zero.
  const half = encodeRecord({ seq: 9, timeNs: 1n, bootId: BOOT });
  half.fill(0, 2048);
  assert.deepEqual(decodeSlot(half, 8), { kind: 'torn', seq: 9, reason: 'bad-crc' });

  assert.deepEqual(decodeSlot(encodeRecord({ seq: 5, timeNs: 1n, bootId: BOOT }), 9), {
    kind: 'torn',
    seq: 5,
    reason: 'wrong-seq',
  });

  const garbage = Buffer.alloc(WL_RECORD_SIZE);
  garbage[4095] = 1;
  assert.deepEqual(decodeSlot(garbage, 0), { kind: 'torn', seq: null, reason: 'garbage' });

  // Intact checksum over a payload that is not the seq's: only a forger gets here.
  const forged = encodeRecord({ seq: 2, timeNs: 1n, bootId: BOOT });
  forged[100] = (forged[100] as number) ^ 0xff;
  forged.writeUInt32LE(crc32(forged.subarray(0, WL_CRC_OFFSET)), WL_CRC_OFFSET);
  assert.deepEqual(decodeSlot(forged, 1), { kind: 'torn', seq: 2, reason: 'bad-payload' });

  const badVersion = encodeRecord({ seq: 1, timeNs: 1n, bootId: BOOT });
  badVersion.writeUInt32LE(2, 8);
  badVersion.writeUInt32LE(crc32(badVersion.subarray(0, WL_CRC_OFFSET)), WL_CRC_OFFSET);
  assert.deepEqual(decodeSlot(badVersion, 0), { kind: 'torn', seq: 1, reason: 'bad-header' });
});

test('boot ids convert to 16 bytes and back', () => {
  assert.equal(bytesToBootId(bootIdToBytes(BOOT)), BOOT);
  assert.throws(() => bootIdToBytes('not-a-uuid'), TypeError);
});

/** The text rule written the obvious (slow) way, with BigInt state and strings. */
function referenceText(seq: number): Buffer {
  const mask = (1n << 64n) - 1n;
  let state = (BigInt(seq) * 0x9e3779b97f4a7c15n) & mask;
  let text = '';
  while (text.length < WL_PAYLOAD_WORDS * 8) {
    state ^= (state << 13n) & mask;
    state ^= state >> 7n;
    state ^= (state << 17n) & mask;
    const r = Number(state >> 32n);
    if ((r & 15) < 3) text += `\n${WL_TEXT_PHRASES[(r >>> 4) & 7]}${(r >>> 7) % 10000} `;
    else text += `${WL_TEXT_WORDS[(r >>> 8) % WL_TEXT_WORDS.length]} `;
  }
  return Buffer.from(text.slice(0, WL_PAYLOAD_WORDS * 8), 'latin1');
}

test('the text payload follows its rule, and its records verify like random ones with the same headers', () => {
  for (const seq of [1, 2, 3, 4096, 1_000_003, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
    assert.deepEqual(writeLogPayloadOf('text', seq), referenceText(seq), `seq ${seq}`);
  }
  const rec = encodeRecord({ seq: 9, timeNs: 5n, bootId: BOOT }, 'text');
  const rnd = encodeRecord({ seq: 9, timeNs: 5n, bootId: BOOT });
  assert.deepEqual(rec.subarray(0, WL_PAYLOAD_OFFSET), rnd.subarray(0, WL_PAYLOAD_OFFSET));
  assert.equal(rec.readUInt32LE(WL_CRC_OFFSET), crc32(rec.subarray(0, WL_CRC_OFFSET)));
  assert.deepEqual(decodeSlot(rec, 8), { kind: 'valid', record: { seq: 9, timeNs: 5n, bootId: BOOT } });
  // A text record in the wrong slot, or with a changed letter (CRC fixed up), is still caught.
  assert.deepEqual(decodeSlot(rec, 9), { kind: 'torn', seq: 9, reason: 'wrong-seq' });
  const forged = Buffer.from(rec);
  forged[100] = forged[100]! ^ 0x20;
  forged.writeUInt32LE(crc32(forged.subarray(0, WL_CRC_OFFSET)), WL_CRC_OFFSET);
  assert.deepEqual(decodeSlot(forged, 8), { kind: 'torn', seq: 9, reason: 'bad-payload' });
});

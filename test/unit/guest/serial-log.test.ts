import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseGuestSerial, parseHeartbeats, parseSerialAcks } from '../../../src/guest/serial-log.js';

const ID = '9b624228-afec-4286-b7d9-1204fa1c198f';
const LOG = [
  '[    3.757737] Run /init as init process',
  `mamori-guest ready boot_id=${ID}`,
  'mamori-wl start resume_after=0 slots=16384 rate=20',
  'mamori-wl ack 1',
  `mamori-hb 1 boot_id=${ID} wl_seq=1`,
  'mamori-wl ack 2',
  // A kernel message that landed in front of a line must not hide it.
  '[    5.1] virtio_blk virtio1: something mamori-wl ack 3',
  `mamori-hb 2 boot_id=${ID} wl_seq=3`,
  'mamori-wl ack 4x',
  'mamori-wl ack',
  'mamori-wl stopped last_seq=3',
  'mamori-guest poweroff last_seq=3',
  '[    8.876090] reboot: Power down',
].join('\r\n');

test("acks are read line by line, with the tty's \\r\\n, ignoring malformed lines", () => {
  assert.deepEqual(parseSerialAcks(LOG), [1, 2, 3]);
  assert.deepEqual(parseSerialAcks(''), []);
});

test('heartbeats carry their number, boot id and last durable seq', () => {
  assert.deepEqual(parseHeartbeats(LOG), [
    { n: 1, bootId: ID, wlSeq: 1 },
    { n: 2, bootId: ID, wlSeq: 3 },
  ]);
});

test('the summary has boots, power-offs, and flags full and errors', () => {
  const s = parseGuestSerial(LOG + '\nmamori-wl full\nmamori-wl error write seq=9: Input/output error\n');
  assert.deepEqual(s.boots, [ID]);
  assert.deepEqual(s.poweroffs, [3]);
  assert.equal(s.full, true);
  assert.deepEqual(s.errors, ['mamori-wl error write seq=9: Input/output error']);
  assert.equal(s.acks.length, 3);
  assert.equal(s.heartbeats.length, 2);
});

import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { socketPair } from '../../harness/socket-pair.js';
import { after, before, describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { receiveJournal, shipJournal } from '../../../src/cdp/journal-shipping.js';
import { encodeRecordHeader } from '../../../src/cdp/journal-format.js';

const sameRecords = (x: WriteJournal, y: WriteJournal, upTo: number): void => {
  for (let seq = x.index.firstSeq; seq <= upTo; seq++) {
    const a = x.index.get(seq);
    const b = y.index.get(seq);
    assert.deepEqual(
      [b.kind, b.flags, b.timeUs, b.offset, b.length],
      [a.kind, a.flags, a.timeUs, a.offset, a.length],
      `record ${seq}`,
    );
  }
};

describe('journal shipping', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-ship-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('ships records as they become durable, acknowledges them, and resumes after a cut where the receiver ends', async () => {
    const src = await WriteJournal.open(join(dir, 'src'), { segmentBytes: 256 * 1024 });
    const dstDir = join(dir, 'dst');
    let dst = await WriteJournal.open(dstDir);
    for (let i = 0; i < 50; i++) await src.appendWrite(i * 4096, Buffer.alloc(4096, i + 1));
    await src.appendCheckpoint();

    let pair = await socketPair(dir, 'one');
    const acks: number[] = [];
    const shipping = shipJournal(src, pair.a, { onAck: (s) => acks.push(s) });
    const receiving = receiveJournal(dst, pair.b);
    // What was there, then what comes while the stream is open.
    for (let i = 0; i < 20; i++) await src.appendWrite(0, Buffer.alloc(100_000, 0xa0 + i));
    await src.appendCheckpoint();
    while (acks.at(-1) !== src.durableSeq) await new Promise((r) => setTimeout(r, 5));
    assert.equal(dst.durableSeq, src.durableSeq);
    sameRecords(src, dst, src.durableSeq);
    assert.deepEqual(
      acks,
      [...acks].sort((x, y) => x - y),
      'acknowledgments only move forward',
    );

    // The link is cut; the recovery site restarts; more is written meanwhile.
    pair.a.destroy();
    await Promise.all([shipping, receiving]);
    pair.server.close();
    await dst.close();
    for (let i = 0; i < 10; i++) await src.appendZero(i * 8192, 8192);
    await src.appendCheckpoint();
    dst = await WriteJournal.open(dstDir);
    pair = await socketPair(dir, 'two');
    const again = shipJournal(src, pair.a);
    const receivingAgain = receiveJournal(dst, pair.b);
    while (dst.durableSeq !== src.durableSeq) await new Promise((r) => setTimeout(r, 5));
    sameRecords(src, dst, src.durableSeq);
    assert.equal(dst.index.checkpoints().length, 3);
    pair.a.end();
    pair.a.destroy();
    await Promise.all([again, receivingAgain]);
    pair.server.close();
    await src.close();
    await dst.close();
  });

  it('refuses a record that does not check, before appending it', async () => {
    const dst = await WriteJournal.open(join(dir, 'hostile'));
    const pair = await socketPair(dir, 'hostile');
    const receiving = receiveJournal(dst, pair.b);
    const payload = Buffer.alloc(512, 7);
    const header = encodeRecordHeader({ kind: 'write', flags: 0, seq: 1, timeUs: 1, offset: 0, length: 512 }, payload);
    payload[100] = 8; // altered in flight
    pair.a.write(Buffer.concat([header, payload]));
    await assert.rejects(receiving, (e: unknown) => isMamoriError(e, 'JOURNAL_CORRUPT'));
    assert.equal(dst.index.count, 0);
    // And one numbered out of turn.
    const pair2 = await socketPair(dir, 'hostile2');
    const receiving2 = receiveJournal(dst, pair2.b);
    const ok = Buffer.alloc(16, 1);
    pair2.a.write(
      Buffer.concat([
        encodeRecordHeader({ kind: 'write', flags: 0, seq: 5, timeUs: 1, offset: 0, length: 16 }, ok),
        ok,
      ]),
    );
    await assert.rejects(receiving2, /arrived where 1 was due/);
    assert.equal(dst.index.count, 0);
    pair.server.close();
    pair2.server.close();
    await dst.close();
  });
});

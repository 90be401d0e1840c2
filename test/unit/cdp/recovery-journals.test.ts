import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closePair, socketPair, type SocketPair } from '../../harness/socket-pair.js';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { shipJournal } from '../../../src/cdp/journal-shipping.js';
import { RecoveryJournals } from '../../../src/cdp/recovery-journals.js';
import { CHECKPOINT_FLAG } from '../../../src/cdp/journal-format.js';

/*
 * The recovery site's journals of one replica, fed by real journal shipping over unix sockets
 * from real source journals on disk: what a checkpoint listing says is what both disks hold.
 */

const opened: SocketPair[] = [];
const pairOf = async (dir: string, name: string): Promise<SocketPair> => {
  const p = await socketPair(dir, name);
  opened.push(p);
  return p;
};

/** A checkpoint of both disks at one instant, as the source's tap appends it. */
async function checkpointBoth(disks: WriteJournal[], flags = 0): Promise<number> {
  const t = Math.max(Date.now() * 1000, ...disks.map((d) => d.lastTimeUs));
  for (const d of disks) await d.appendCheckpoint(flags, t);
  return t;
}

const until = async (what: () => boolean): Promise<void> => {
  while (!what()) await new Promise((r) => setTimeout(r, 5));
};

describe('recovery journals', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-recovery-journals-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('receives each disk, lists only the instants every disk holds, and a new stream replaces the old', async () => {
    const root = join(dir, 'replicas');
    const journals = new RecoveryJournals({ root, log: pino({ level: 'silent' }) });
    await assert.rejects(
      journals.receive('r1', 0, (await pairOf(dir, 'none')).b),
      (e) => isMamoriError(e, 'VM_INVALID_STATE'),
      'no journal begun',
    );
    assert.equal(await journals.checkpoints('r1'), null, 'no journal: no list at all, not an empty one');
    const base = await journals.begin('r1', { basePointId: 'p1', disks: [0, 1] });
    assert.deepEqual(await journals.base('r1'), base);
    assert.deepEqual(await journals.checkpoints('r1'), []);
    await assert.rejects(journals.receive('r1', 2, (await pairOf(dir, 'd2')).b), (e) => isMamoriError(e, 'NOT_FOUND'));

    const src = [await WriteJournal.open(join(dir, 'src0')), await WriteJournal.open(join(dir, 'src1'))];
    for (let i = 0; i < 10; i++) await src[0]!.appendWrite(i * 4096, Buffer.alloc(4096, i + 1));
    const t1 = await checkpointBoth(src);
    await src[1]!.appendWrite(0, Buffer.alloc(512, 7));
    const t2 = await checkpointBoth(src, CHECKPOINT_FLAG.applicationConsistent);
    // Disk 0 alone takes a third checkpoint: not an instant of the VM until disk 1 has it too.
    await src[0]!.appendCheckpoint(0, t2 + 1000);

    const pairs = [await pairOf(dir, 's0'), await pairOf(dir, 's1')];
    const acked = [0, 0];
    const shipping = src.map((j, k) => shipJournal(j, pairs[k]!.a, { onAck: (s) => (acked[k] = s) }));
    const receiving = [0, 1].map((k) => journals.receive('r1', k, pairs[k]!.b));
    await until(() => acked[0] === src[0]!.durableSeq && acked[1] === src[1]!.durableSeq);
    const listed = (await journals.checkpoints('r1'))!;
    assert.deepEqual(
      listed.map((c) => [c.time, c.applicationConsistent]),
      [
        [new Date(t1 / 1000).toISOString(), false],
        [new Date(t2 / 1000).toISOString(), true],
      ],
    );
    assert.deepEqual(
      (await journals.checkpoints('r1', { fromUs: t1 + 1 }))!.map((c) => c.seq),
      [listed[1]!.seq],
    );
    assert.deepEqual(await journals.checkpoints('r1', { toUs: t1 - 1 }), []);

    // The source dials again while the old stream looks open: the old one is cut, the new one
    // starts where the journal ends, and what comes next arrives once.
    const again = await pairOf(dir, 's0-again');
    const reshipping = shipJournal(src[0]!, again.a, { onAck: (s) => (acked[0] = s) });
    const rereceiving = journals.receive('r1', 0, again.b);
    await receiving[0];
    await shipping[0]!.catch(() => undefined);
    await src[0]!.appendWrite(0, Buffer.alloc(4096, 9));
    await src[1]!.appendCheckpoint(0, t2 + 1000);
    await until(() => acked[0] === src[0]!.durableSeq && acked[1] === src[1]!.durableSeq);
    assert.equal((await journals.checkpoints('r1'))!.length, 3, 'the third instant, now on both disks');

    // Closing the replica's journals cuts its streams; a new begin starts a new epoch over its
    // own point, and the old epoch's points in time stay listed and readable.
    await journals.close('r1');
    await Promise.all([rereceiving, receiving[1]]);
    await Promise.all([reshipping, shipping[1]]).catch(() => undefined);
    const before = (await journals.checkpoints('r1'))!;
    await journals.begin('r1', { basePointId: 'p2', disks: [0] });
    assert.equal((await journals.base('r1'))?.basePointId, 'p2');
    assert.deepEqual(await journals.basePoints('r1'), ['p1', 'p2'], 'retention keeps both bases');
    assert.deepEqual(await journals.checkpoints('r1'), before);
    assert.deepEqual((await readdir(join(root, 'r1', 'journal'))).sort(), ['e000001', 'e000002']);
    const atT2 = await journals.epochAt('r1', t2);
    assert.equal(atT2?.base.basePointId, 'p1', 'an instant of the first epoch reads over its base');
    assert.deepEqual([...atT2!.indexes.keys()], [0, 1]);
    assert.equal(await journals.epochAt('r1', t1 - 1), null, 'before the window: nothing');
    // A stream of the new epoch lands there, not in the old one.
    const src2 = await WriteJournal.open(join(dir, 'src2'));
    await src2.appendWrite(0, Buffer.alloc(4096, 3));
    // A minute ahead: whatever the clock does meanwhile, this epoch stays in the window below.
    const t3 = Math.max(Date.now() * 1000, t2 + 2000) + 60_000_000;
    await src2.appendCheckpoint(0, t3);
    const p3 = await pairOf(dir, 's2');
    let acked2 = 0;
    const shipping2 = shipJournal(src2, p3.a, { onAck: (s) => (acked2 = s) });
    const receiving2 = journals.receive('r1', 0, p3.b);
    await until(() => acked2 === src2.durableSeq);
    assert.deepEqual(
      (await journals.checkpoints('r1'))!.map((c) => c.time),
      [...before.map((c) => c.time), new Date(t3 / 1000).toISOString()],
    );
    assert.equal((await journals.epochAt('r1', t3))?.base.basePointId, 'p2');
    // An epoch whose newest checkpoint left the window goes at the next begin; a newer one stays.
    await journals.close('r1');
    await receiving2;
    await shipping2.catch(() => undefined);
    await journals.begin('r1', { basePointId: 'p3', disks: [0], windowMs: Date.now() - t2 / 1000 - 1.5 });
    assert.deepEqual(await journals.basePoints('r1'), ['p2', 'p3']);
    assert.deepEqual((await readdir(join(root, 'r1', 'journal'))).sort(), ['e000002', 'e000003']);
    await src2.close();
    await journals.closeAll();
    for (const j of src) await j.close();
    for (const p of opened.splice(0)) closePair(p);
  });
});

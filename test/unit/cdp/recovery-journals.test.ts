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

    // Closing the replica's journals cuts its streams; a new begin starts from nothing.
    await journals.close('r1');
    await Promise.all([rereceiving, receiving[1]]);
    await Promise.all([reshipping, shipping[1]]).catch(() => undefined);
    await journals.begin('r1', { basePointId: 'p2', disks: [0] });
    assert.equal((await journals.base('r1'))?.basePointId, 'p2');
    assert.deepEqual(await journals.checkpoints('r1'), []);
    assert.deepEqual((await readdir(join(root, 'r1', 'journal'))).sort(), ['base.json', 'disk0']);
    await journals.closeAll();
    for (const j of src) await j.close();
    for (const p of opened.splice(0)) closePair(p);
  });
});

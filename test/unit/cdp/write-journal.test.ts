import { strict as assert } from 'node:assert';
import { appendFile, mkdtemp, readdir, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { PointInTimeExport, type BaseReader } from '../../../src/cdp/point-in-time-export.js';

const zeroBase = (size: number): BaseReader => ({
  size,
  read: (_offset, length) => Promise.resolve(Buffer.alloc(length)),
});

describe('WriteJournal and PointInTimeExport', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mamori-journal-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('keeps concurrent appends in call order, across segments, and reopens to the same index', async () => {
    const dir = join(root, 'order');
    let now = 1_000_000;
    const j = await WriteJournal.open(dir, { segmentBytes: 16 * 1024, nowUs: () => now++ });
    const appended = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        i % 10 === 9 ? j.appendCheckpoint() : j.appendWrite(i * 512, Buffer.alloc(1024, i)),
      ),
    );
    assert.deepEqual(
      appended.map((a) => a.seq),
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
    assert.ok((await readdir(dir)).length > 1, 'rotated into several segments');
    await j.close();
    const again = await WriteJournal.open(dir);
    assert.equal(again.index.count, 40);
    assert.equal(again.index.checkpoints().length, 4);
    for (let seq = 1; seq <= 40; seq++) assert.equal(again.index.get(seq).timeUs, appended[seq - 1]!.timeUs);
    // Appends continue the sequence.
    assert.equal((await again.appendZero(0, 4096)).seq, 41);
    await again.close();
  });

  it('cuts a torn tail and refuses a journal with a segment missing', async () => {
    const dir = join(root, 'torn');
    const j = await WriteJournal.open(dir, { segmentBytes: 8 * 1024 });
    for (let i = 0; i < 9; i++) await j.appendWrite(0, Buffer.alloc(3000, i + 1));
    await j.close();
    const segs = (await readdir(dir)).sort();
    assert.equal(segs.length, 3);
    const last = join(dir, segs.at(-1)!);
    const size = (await stat(last)).size;
    // A crash in the middle of the last record's data, then garbage after it.
    await truncate(last, size - 100);
    await appendFile(last, Buffer.alloc(500, 0xee));
    const reopened = await WriteJournal.open(dir);
    assert.equal(reopened.index.count, 8, 'the torn record is gone, the ones before it kept');
    assert.equal((await reopened.appendCheckpoint()).seq, 9, 'and its number is taken by the next record');
    await reopened.close();
    assert.ok((await stat(last)).size < size, 'the tail was cut off the file');

    // A crash right after the newest segment was created, before its header was synced.
    const next = join(dir, `seg-${String(10).padStart(16, '0')}.mjl`);
    await writeFile(next, Buffer.alloc(5));
    const afterCrash = await WriteJournal.open(dir, { segmentBytes: 8 * 1024 });
    assert.equal(afterCrash.index.count, 9, 'the short segment held nothing');
    assert.equal((await afterCrash.appendWrite(0, Buffer.alloc(6000, 1))).seq, 10);
    await afterCrash.close();
    await assert.rejects(stat(next), 'the short segment was removed');

    await unlink(join(dir, segs[1]!));
    await assert.rejects(WriteJournal.open(dir), (e: unknown) => isMamoriError(e, 'JOURNAL_CORRUPT'));
  });

  it('presents the disk as of any checkpoint, base underneath', async () => {
    const dir = join(root, 'pit');
    const SIZE = 256 * 1024;
    const j = await WriteJournal.open(dir, { segmentBytes: 64 * 1024 });
    const model = Buffer.alloc(SIZE, 0);
    const expected = new Map<number, Buffer>();
    let seed = 3;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 300; i++) {
      const offset = rand(SIZE - 8192);
      const length = 1 + rand(8192);
      if (i % 37 === 5) {
        await j.appendZero(offset, length);
        model.fill(0, offset, offset + length);
      } else {
        const data = Buffer.alloc(length, (i % 250) + 1);
        await j.appendWrite(offset, data);
        data.copy(model, offset);
      }
      if (i % 25 === 24) expected.set((await j.appendCheckpoint()).seq, Buffer.from(model));
    }
    await j.close();
    const reopened = await WriteJournal.open(dir);
    for (const [seq, image] of expected) {
      const view = new PointInTimeExport(reopened.index, seq, zeroBase(SIZE));
      try {
        assert.equal(Buffer.compare(await view.read(0, SIZE), image), 0, `checkpoint ${seq}`);
        assert.equal(Buffer.compare(await view.read(1000, 5000), image.subarray(1000, 6000)), 0);
      } finally {
        await view.close();
      }
    }
    // A point in time rounds down to the checkpoint at or before it.
    const cps = reopened.index.checkpoints();
    assert.equal(reopened.index.checkpointAtOrBefore(cps[2]!.timeUs + 1)?.seq, cps[2]!.seq);
    assert.equal(reopened.index.checkpointAtOrBefore(cps[0]!.timeUs - 1), null);
    assert.throws(() => new PointInTimeExport(reopened.index, 1, zeroBase(SIZE)), /not a checkpoint/);
    await reopened.close();
  });
});

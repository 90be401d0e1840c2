import { strict as assert } from 'node:assert';
import { appendFile, mkdtemp, readdir, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { JournalRecordReader } from '../../../src/cdp/journal-records.js';
import { RECORD_HEADER_BYTES, type JournalRecordHeader } from '../../../src/cdp/journal-format.js';
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

  it('appends batches in order with one answer each, and takes a replicated batch only if every record checks', async () => {
    const src = await WriteJournal.open(join(root, 'batch-src'), { segmentBytes: 16 * 1024 });
    const first = await src.appendMany(
      Array.from({ length: 30 }, (_, i) =>
        i % 3 === 2
          ? { kind: 'zero' as const, offset: i * 512, length: 512 }
          : { kind: 'write' as const, offset: i * 512, data: Buffer.alloc(1024, i) },
      ),
      5_000_000,
    );
    assert.deepEqual(first, { seq: 30, timeUs: 5_000_000 });
    assert.equal(src.durableSeq, 30, 'answered once the last is durable');
    assert.equal(await src.appendMany([], 5_000_000), null);
    await assert.rejects(src.appendMany([{ kind: 'zero', offset: 0, length: 512 }], 4_999_999), /go back/);
    await src.appendCheckpoint(0, 6_000_000);
    for (let seq = 1; seq <= 31; seq++) assert.equal(src.index.get(seq).timeUs, seq <= 30 ? 5_000_000 : 6_000_000);

    const dst = await WriteJournal.open(join(root, 'batch-dst'));
    const reader = new JournalRecordReader(src.index);
    const stored: {
      header: JournalRecordHeader;
      payload: Buffer | null;
    }[] = [];
    for (let seq = 1; seq <= 31;) {
      const run = await reader.read(seq, 31, 4096);
      for (let k = 0, at = 0; k < run.headers.length; k++) {
        const h = run.headers[k]!;
        const n = h.kind === 'write' ? h.length : 0;
        stored.push({
          header: h,
          payload: n > 0 ? run.bytes.subarray(at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + n) : null,
        });
        at += RECORD_HEADER_BYTES + n;
      }
      seq = run.headers.at(-1)!.seq + 1;
    }
    await reader.close();
    // One altered payload in the batch: none of it goes in.
    const altered = stored.map((r, k) => (k === 10 ? { ...r, payload: Buffer.alloc(r.payload!.length, 0xee) } : r));
    await assert.rejects(dst.appendReplicatedMany(altered.slice(0, 20)), (e: unknown) =>
      isMamoriError(e, 'JOURNAL_CORRUPT'),
    );
    assert.equal(dst.index.count, 0);
    await assert.rejects(dst.appendReplicatedMany(stored.slice(1, 5)), /arrived where 1 was due/);
    assert.deepEqual((await dst.appendReplicatedMany(stored.slice(0, 20)))?.seq, 20);
    assert.deepEqual((await dst.appendReplicatedMany(stored.slice(20)))?.seq, 31);
    for (let seq = 1; seq <= 31; seq++) {
      const [a, b] = [src.index.get(seq), dst.index.get(seq)];
      assert.deepEqual([b.kind, b.offset, b.length, b.timeUs], [a.kind, a.offset, a.length, a.timeUs]);
    }
    await src.close();
    await dst.close();
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

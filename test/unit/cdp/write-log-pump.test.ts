import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { WriteLogReader } from '../../../src/cdp/write-log-format.js';
import { pumpWriteLog, pumpWriteLogAhead } from '../../../src/cdp/write-log-pump.js';
import { PointInTimeExport } from '../../../src/cdp/point-in-time-export.js';
import { LOG_SECTOR as S, logEntry, logSuperblock } from '../../harness/write-log-bytes.js';

/** A write log of `entries` and an empty journal in a temporary folder, for `fn`; all gone after. */
async function withLogAndJournal(
  entries: Buffer[],
  fn: (reader: WriteLogReader, journal: WriteJournal) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-pump-'));
  const logPath = join(dir, 'log');
  await writeFile(logPath, Buffer.concat(entries));
  const journal = await WriteJournal.open(join(dir, 'journal'));
  const reader = await WriteLogReader.open(logPath);
  try {
    await fn(reader, journal);
  } finally {
    await reader.close();
    await journal.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("a write log's checkpoints become journal records stamped with their instant, and read back as the disk", async () => {
  await withLogAndJournal(
    [
      logSuperblock(5),
      logEntry(8, 2, 0, Buffer.alloc(2 * S, 7)),
      logEntry(0, 0, 1), // the first checkpoint's flush
      logEntry(8, 1, 4), // discard: reads as zeros
      logEntry(100, 1, 0, Buffer.alloc(S, 9)),
      logEntry(0, 0, 1),
    ],
    async (reader, journal) => {
      const t1 = new Date('2026-12-07T12:00:00.000Z');
      const t2 = new Date('2026-12-07T12:00:01.000Z');
      const first = await pumpWriteLog(reader, journal, { entries: 2, at: t1 });
      const second = await pumpWriteLog(reader, journal, { entries: 5, at: t2 });
      assert.deepEqual([first.records, second.records], [1, 2]);
      const records = [];
      for (let seq = journal.index.firstSeq; seq < journal.index.nextSeq; seq++) {
        const e = journal.index.get(seq);
        records.push([e.kind, e.timeUs]);
      }
      const us = (d: Date): number => d.getTime() * 1000;
      assert.deepEqual(records, [
        ['write', us(t1)],
        ['checkpoint', us(t1)],
        ['zero', us(t2)],
        ['write', us(t2)],
        ['checkpoint', us(t2)],
      ]);
      // A host clock that steps back stamps no record before the journal's last.
      const back = await pumpWriteLog(reader, journal, { entries: 5, at: new Date(t1.getTime() - 5000) });
      assert.equal(back.records, 0);
      assert.equal(journal.index.get(back.checkpointSeq).timeUs, us(t2));

      const base = { size: 1024 * S, read: (_o: number, n: number) => Promise.resolve(Buffer.alloc(n, 1)) };
      const atFirst = new PointInTimeExport(journal.index, first.checkpointSeq, base);
      const atSecond = new PointInTimeExport(journal.index, second.checkpointSeq, base);
      try {
        assert.deepEqual(
          await atFirst.read(7 * S, 4 * S),
          Buffer.concat([Buffer.alloc(S, 1), Buffer.alloc(2 * S, 7), Buffer.alloc(S, 1)]),
        );
        assert.deepEqual(await atFirst.read(100 * S, S), Buffer.alloc(S, 1));
        assert.deepEqual(await atSecond.read(8 * S, 2 * S), Buffer.concat([Buffer.alloc(S), Buffer.alloc(S, 7)]));
        assert.deepEqual(await atSecond.read(100 * S, S), Buffer.alloc(S, 9));
      } finally {
        await atFirst.close();
        await atSecond.close();
      }
    },
  );
});

test('writes pumped ahead of a checkpoint carry the time of the one before, and the checkpoint holds them', async () => {
  await withLogAndJournal(
    [
      logSuperblock(6),
      logEntry(8, 1, 0, Buffer.alloc(S, 1)),
      logEntry(0, 0, 1),
      logEntry(9, 1, 0, Buffer.alloc(S, 2)), // pumped ahead
      logEntry(0, 0, 1),
      logEntry(10, 1, 0, Buffer.alloc(S, 3)), // the checkpoint's rest
      logEntry(0, 0, 1),
    ],
    async (reader, journal) => {
      const t1 = new Date('2026-12-07T12:00:00.000Z');
      const t2 = new Date('2026-12-07T12:00:01.000Z');
      const us = (d: Date): number => d.getTime() * 1000;
      await pumpWriteLog(reader, journal, { entries: 2, at: t1 });
      assert.equal(await pumpWriteLogAhead(reader, journal, 4), 1);
      const second = await pumpWriteLog(reader, journal, { entries: 6, at: t2 });
      assert.equal(second.records, 1, 'only what the ahead batch left');
      const records = [];
      for (let seq = journal.index.firstSeq; seq < journal.index.nextSeq; seq++) {
        const e = journal.index.get(seq);
        records.push([e.kind, e.kind === 'write' ? e.offset / S : null, e.timeUs]);
      }
      assert.deepEqual(records, [
        ['write', 8, us(t1)],
        ['checkpoint', null, us(t1)],
        ['write', 9, us(t1)],
        ['write', 10, us(t2)],
        ['checkpoint', null, us(t2)],
      ]);
      // A lookup by time finds checkpoints only: at t1, the ahead write is not in the disk.
      assert.equal(journal.index.checkpointAtOrBefore(us(t1) + 500_000)!.timeUs, us(t1));
      const base = { size: 1024 * S, read: (_o: number, n: number) => Promise.resolve(Buffer.alloc(n, 0)) };
      const atFirst = new PointInTimeExport(journal.index, journal.index.checkpointAtOrBefore(us(t1))!.seq, base);
      const atSecond = new PointInTimeExport(journal.index, second.checkpointSeq, base);
      try {
        assert.deepEqual(await atFirst.read(8 * S, 3 * S), Buffer.concat([Buffer.alloc(S, 1), Buffer.alloc(2 * S)]));
        assert.deepEqual(
          await atSecond.read(8 * S, 3 * S),
          Buffer.concat([Buffer.alloc(S, 1), Buffer.alloc(S, 2), Buffer.alloc(S, 3)]),
        );
      } finally {
        await atFirst.close();
        await atSecond.close();
      }
    },
  );
});

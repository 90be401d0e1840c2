import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { WriteLogReader } from '../../../src/cdp/write-log-format.js';
import { pumpWriteLog } from '../../../src/cdp/write-log-pump.js';
import { PointInTimeExport } from '../../../src/cdp/point-in-time-export.js';
import { LOG_SECTOR as S, logEntry, logSuperblock } from '../../harness/write-log-bytes.js';

test("a write log's checkpoints become journal records stamped with their instant, and read back as the disk", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-pump-'));
  const logPath = join(dir, 'log');
  await writeFile(
    logPath,
    Buffer.concat([
      logSuperblock(5),
      logEntry(8, 2, 0, Buffer.alloc(2 * S, 7)),
      logEntry(0, 0, 1), // the first checkpoint's flush
      logEntry(8, 1, 4), // discard: reads as zeros
      logEntry(100, 1, 0, Buffer.alloc(S, 9)),
      logEntry(0, 0, 1),
    ]),
  );
  const journal = await WriteJournal.open(join(dir, 'journal'));
  const reader = await WriteLogReader.open(logPath);
  try {
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
  } finally {
    await reader.close();
    await journal.close();
    await rm(dir, { recursive: true, force: true });
  }
});

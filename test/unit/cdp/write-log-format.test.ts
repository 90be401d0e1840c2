import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WriteLogReader, parseWriteLogSuperblock } from '../../../src/cdp/write-log-format.js';
import { LOG_SECTOR, logEntry, logSuperblock } from '../../harness/write-log-bytes.js';

const S = LOG_SECTOR;
const superblock = logSuperblock;
const entry = logEntry;

async function withLog(bytes: Buffer, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-wlf-'));
  try {
    await writeFile(join(dir, 'log'), bytes);
    await fn(join(dir, 'log'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a write log reads back as QEMU wrote it: writes with data, discards, flushes, in order, from a cursor', async () => {
  const log = Buffer.concat([
    superblock(4),
    entry(8, 2, 0, Buffer.alloc(2 * S, 7)),
    entry(0, 0, 1),
    entry(100, 16, 4),
    entry(2, 1, 2, Buffer.alloc(S, 9)), // FUA: a write like any other
    entry(0, 0, 0), // begun, not whole: past the count it is never read
  ]);
  await withLog(log, async (path) => {
    const r = await WriteLogReader.open(path);
    try {
      assert.deepEqual(await r.superblock(), { entries: 4, sectorSize: S });
      const first = [];
      for await (const e of r.readTo(2)) first.push(e);
      assert.deepEqual(first, [
        { index: 0, kind: 'write', offset: 8 * S, data: Buffer.alloc(2 * S, 7) },
        { index: 1, kind: 'flush' },
      ]);
      assert.equal(r.next, 2);
      const rest = [];
      for await (const e of r.readTo(4)) rest.push(e);
      assert.deepEqual(rest, [
        { index: 2, kind: 'discard', offset: 100 * S, length: 16 * S },
        { index: 3, kind: 'write', offset: 2 * S, data: Buffer.alloc(S, 9) },
      ]);
      for await (const e of r.readTo(3)) assert.fail(`nothing behind the cursor is read again: ${e.index}`);
    } finally {
      await r.close();
    }
  });
});

test('no superblock yet is null; a wrong one, unknown flags, an empty entry or a cut one are JOURNAL_CORRUPT', async () => {
  assert.equal(parseWriteLogSuperblock(Buffer.alloc(S), 'x'), null);
  const bad = superblock(1);
  bad.writeBigUInt64LE(1234n, 0);
  assert.throws(() => parseWriteLogSuperblock(bad, 'x'), /JOURNAL_CORRUPT|wrong magic/);
  assert.throws(() => parseWriteLogSuperblock(superblock(1, 1000), 'x'), /sector size 1000/);
  const cases: [Buffer, RegExp][] = [
    [Buffer.concat([superblock(1), entry(0, 1, 64, Buffer.alloc(S))]), /flags 0x40/],
    [Buffer.concat([superblock(1), entry(0, 0, 0)]), /is empty/],
    [Buffer.concat([superblock(1), entry(0, 4, 0, Buffer.alloc(S))]), /data is cut short/],
    [superblock(1), /cut short at byte 512/],
  ];
  for (const [bytes, message] of cases)
    await withLog(bytes, async (path) => {
      const r = await WriteLogReader.open(path);
      try {
        await assert.rejects(
          (async () => {
            for await (const e of r.readTo(1)) void e;
          })(),
          (e: Error & { code?: string }) => e.code === 'JOURNAL_CORRUPT' && message.test(e.message),
        );
      } finally {
        await r.close();
      }
    });
});

test('reads ahead in chunks, yet reads bytes past the count again once QEMU has written them', async () => {
  // Small entries over several chunks, one entry larger than a chunk, then one begun and not whole.
  const small = Array.from({ length: 3000 }, (_, i) => entry(i, 1, 0, Buffer.alloc(S, i % 251)));
  const big = entry(5000, 3 * 2048, 0, Buffer.alloc(3 * 2048 * S, 0xbb)); // 3 MiB
  const whole = Buffer.concat([superblock(3001), ...small, big]);
  const next = entry(9000, 8, 0, Buffer.alloc(8 * S, 0xcc));
  // The next entry's header is there, its data not yet: what a read ahead may see.
  await withLog(Buffer.concat([whole, next.subarray(0, S), Buffer.alloc(7 * S)]), async (path) => {
    const r = await WriteLogReader.open(path);
    try {
      let n = 0;
      for await (const e of r.readTo(3001)) {
        assert.equal(e.kind, 'write');
        if (e.kind !== 'write') continue;
        if (n < 3000) assert.deepEqual([e.offset, e.data], [n * S, Buffer.alloc(S, n % 251)]);
        else assert.deepEqual([e.offset, e.data.length, e.data[e.data.length - 1]], [5000 * S, 3 * 2048 * S, 0xbb]);
        n++;
      }
      assert.equal(n, 3001);
      await writeFile(path, Buffer.concat([whole, next]));
      const rest = [];
      for await (const e of r.readTo(3002)) rest.push(e);
      assert.deepEqual(rest, [{ index: 3001, kind: 'write', offset: 9000 * S, data: Buffer.alloc(8 * S, 0xcc) }]);
    } finally {
      await r.close();
    }
  });
});

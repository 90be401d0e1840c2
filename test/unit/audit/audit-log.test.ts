import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';
import { openSqliteStore, type SqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { AuditRepo } from '../../../src/store/repos/audit-repo.js';
import { AuditLog, GENESIS_HASH, canonicalJson, entryHash, type AuditRecord } from '../../../src/audit/audit-log.js';

function record(n: number, over: Partial<AuditRecord> = {}): AuditRecord {
  return {
    at: new Date(Date.UTC(2026, 11, 5, 16, 0, n)).toISOString(),
    tokenId: 'tok-admin',
    role: 'admin',
    source: '127.0.0.1',
    method: 'POST',
    route: '/vms/:name/start',
    target: { name: `vm${n}` },
    status: 202,
    errorCode: null,
    requestId: `req-${n}`,
    ...over,
  };
}

/**
 * A log with `n` entries in a fresh database, and a second connection to the same file
 * for the tampering (the triggers that keep the code from editing it are dropped first,
 * as anyone holding the file could).
 */
async function withLog(
  n: number,
  fn: (log: AuditLog, raw: BetterSqlite3.Database, store: SqliteStore, file: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-audit-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  const raw = new BetterSqlite3(join(dir, 'site.db'));
  try {
    const log = new AuditLog(new AuditRepo(store.handle));
    for (let i = 1; i <= n; i++) await log.append(record(i));
    raw.exec('DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;');
    await fn(log, raw, store, join(dir, 'site.db'));
  } finally {
    raw.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test('canonical JSON sorts keys at every level and drops undefined', () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null }, u: undefined }),
    '{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}',
  );
});

test('entries chain: each prev_hash is the hash before it, and the head is the newest', async () => {
  await withLog(5, async (log) => {
    const all = (await log.list({ limit: 100 })).reverse();
    assert.deepEqual(
      all.map((e) => e.seq),
      [1, 2, 3, 4, 5],
    );
    assert.equal(all[0]!.prevHash, GENESIS_HASH);
    for (let i = 1; i < all.length; i++) assert.equal(all[i]!.prevHash, all[i - 1]!.hash);
    for (const e of all) assert.equal(e.hash, entryHash(e.prevHash, e.seq, e));
    assert.deepEqual(all[2]!.target, { name: 'vm3' });
    const v = await log.verify();
    assert.deepEqual(v, { ok: true, entries: 5, head: { seq: 5, hash: all[4]!.hash } });
  });
});

test('an empty log verifies', async () => {
  await withLog(0, async (log) => assert.deepEqual(await log.verify(), { ok: true, entries: 0, head: null }));
});

test('the code cannot edit or delete entries (triggers)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-audit-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const log = new AuditLog(new AuditRepo(store.handle));
    await log.append(record(1));
    await assert.rejects(store.db.updateTable('audit_log').set({ status: 200 }).execute(), /append-only/);
    await assert.rejects(store.db.deleteFrom('audit_log').execute(), /append-only/);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('an edited entry is found', async () => {
  await withLog(5, async (log, raw) => {
    raw.prepare('UPDATE audit_log SET status = 200 WHERE seq = 3').run();
    const v = await log.verify();
    assert.equal(v.ok, false);
    assert.deepEqual([v.firstBad?.seq, v.firstBad?.problem], [3, 'edited']);
    assert.match(v.firstBad!.message, /#3/);
  });
});

test('an edited entry whose hash was recomputed breaks the link to the next one', async () => {
  await withLog(5, async (log, raw) => {
    const e = (await log.list({ limit: 100 })).find((x) => x.seq === 3)!;
    const forged = { ...e, tokenId: 'tok-someone-else' };
    raw
      .prepare('UPDATE audit_log SET token_id = ?, hash = ? WHERE seq = 3')
      .run(forged.tokenId, entryHash(e.prevHash, 3, forged));
    const v = await log.verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, 4, 'chain-broken']);
  });
});

test('a removed middle entry is found', async () => {
  await withLog(5, async (log, raw) => {
    raw.prepare('DELETE FROM audit_log WHERE seq = 3').run();
    const v = await log.verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, 4, 'sequence-gap']);
    assert.match(v.firstBad!.message, /entry #3 is missing/);
  });
});

test('a removed last entry is found through the head kept apart', async () => {
  await withLog(5, async (log, raw) => {
    raw.prepare('DELETE FROM audit_log WHERE seq = 5').run();
    const v = await log.verify();
    assert.deepEqual([v.ok, v.entries, v.firstBad?.seq, v.firstBad?.problem], [false, 4, 5, 'head-mismatch']);
    assert.match(v.firstBad!.message, /#5 to #5\) were removed/);
  });
});

test('removing every entry is found', async () => {
  await withLog(3, async (log, raw) => {
    raw.prepare('DELETE FROM audit_log').run();
    const v = await log.verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, 1, 'head-mismatch']);
  });
});

test('a reordered pair is found', async () => {
  await withLog(5, async (log, raw) => {
    raw.transaction(() => {
      raw.prepare('UPDATE audit_log SET seq = -2 WHERE seq = 2').run();
      raw.prepare('UPDATE audit_log SET seq = 2 WHERE seq = 3').run();
      raw.prepare('UPDATE audit_log SET seq = 3 WHERE seq = -2').run();
    })();
    const v = await log.verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, 2, 'chain-broken']);
  });
});

test('appends after a removal keep chaining from the head, so the gap stays visible', async () => {
  await withLog(4, async (log, raw) => {
    raw.prepare('DELETE FROM audit_log WHERE seq = 4').run();
    await log.append(record(5));
    const v = await log.verify();
    assert.deepEqual([v.ok, v.firstBad?.seq, v.firstBad?.problem], [false, 5, 'sequence-gap']);
  });
});

test('concurrent appends do not fork the chain, through one log or two on the same database', async () => {
  await withLog(0, async (log, _raw, store) => {
    const other = new AuditLog(new AuditRepo(store.handle));
    const written = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? log : other).append(record(i))),
    );
    assert.deepEqual(
      written.map((e) => e.seq).sort((a, b) => a - b),
      Array.from({ length: 60 }, (_, i) => i + 1),
    );
    assert.equal(new Set(written.map((e) => e.prevHash)).size, 60, 'no two entries chain from the same hash');
    assert.deepEqual(await log.verify(), {
      ok: true,
      entries: 60,
      head: { seq: 60, hash: written.find((e) => e.seq === 60)!.hash },
    });
  });
});

test('another connection appending at the same time (a worker thread: another process) neither forks nor fails', async () => {
  await withLog(0, async (log, _raw, _store, file) => {
    // Its own thread, so its SQLite busy wait does not stall this one's transaction.
    const code = `
      const { workerData, parentPort } = await import('node:worker_threads');
      const { openSqliteStore } = await import(workerData.store);
      const { AuditRepo } = await import(workerData.repo);
      const { AuditLog } = await import(workerData.log);
      const store = await openSqliteStore(workerData.file);
      const log = new AuditLog(new AuditRepo(store.handle));
      parentPort.postMessage('ready');
      for (let i = 0; i < 200; i++) await log.append({ ...workerData.record, requestId: 'worker-' + i });
      await store.close();
      parentPort.postMessage('done');`;
    const here = (rel: string): string => new URL(rel, import.meta.url).href;
    const worker = new Worker(code, {
      eval: true,
      workerData: {
        file,
        record: record(0),
        store: here('../../../src/store/sqlite/open-sqlite-store.js'),
        repo: here('../../../src/store/repos/audit-repo.js'),
        log: here('../../../src/audit/audit-log.js'),
      },
    });
    const said = (what: string): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const on = (m: unknown): void => void (m === what && (worker.off('message', on), resolve()));
        worker.on('message', on);
        worker.once('error', reject);
      });
    const done = said('done');
    await said('ready');
    for (let i = 0; i < 200; i++) await log.append(record(i));
    await done;
    await worker.terminate();
    const v = await log.verify();
    assert.deepEqual([v.ok, v.entries], [true, 400]);
    const seqs = (await log.list({ limit: 1000 })).map((e) => e.requestId);
    const order = seqs
      .reverse()
      .map((id) => (id!.startsWith('worker-') ? 'w' : 'm'))
      .join('');
    assert.match(order, /mw|wm/, 'the two writers took turns');
  });
});

test('list filters by time and token, newest first, bounded', async () => {
  await withLog(0, async (log) => {
    for (let i = 1; i <= 6; i++) await log.append(record(i, { tokenId: i % 2 ? 'tok-a' : 'tok-b' }));
    assert.deepEqual(
      (await log.list({ limit: 3 })).map((e) => e.seq),
      [6, 5, 4],
    );
    assert.deepEqual(
      (await log.list({ tokenId: 'tok-a', limit: 100 })).map((e) => e.seq),
      [5, 3, 1],
    );
    assert.deepEqual(
      (await log.list({ since: record(4).at, limit: 100 })).map((e) => e.seq),
      [6, 5, 4],
    );
    assert.deepEqual(
      (await log.list({ beforeSeq: 3, limit: 100 })).map((e) => e.seq),
      [2, 1],
    );
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { JobJournal, type Job } from '../../../src/jobs/job-journal.js';
import { KeyedLock } from '../../../src/jobs/keyed-lock.js';

async function withStore(fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-jobs-'));
  try {
    await fn(join(dir, 'site.db'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('steps are journalled before and after they run; a failing step fails only itself', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.db);
    const job = await jobs.create('demo', 'thing', ['a', 'b']);
    let seenDuring: string | undefined;
    await jobs.step(job.id, 'a', async () => {
      seenDuring = (await jobs.get(job.id)).steps[0]!.state;
    });
    assert.equal(seenDuring, 'running');
    await assert.rejects(
      jobs.step(job.id, 'b', async () => Promise.reject(new Error('boom'))),
      /boom/,
    );
    const after = await jobs.get(job.id);
    assert.deepEqual(
      after.steps.map((s) => s.state),
      ['done', 'failed'],
    );
    assert.equal(after.state, 'running', 'the caller decides the job outcome');
    await store.close();
  });
});

test('a job cut by a crash gets its recovery rule at the next start, with the step it was in', async () => {
  await withStore(async (file) => {
    const first = await openSqliteStore(file);
    const j1 = new JobJournal(first.db);
    const job = await j1.create('copy', 'disk-x', ['convert', 'register']);
    // Simulate the server dying inside 'convert': the step is marked running, never done.
    void j1.step(job.id, 'convert', () => new Promise(() => undefined));
    await new Promise((r) => setTimeout(r, 50));
    await first.close();

    const second = await openSqliteStore(file);
    const j2 = new JobJournal(second.db);
    const seen: Job[] = [];
    j2.registerRecovery('copy', async (j) => void seen.push(j));
    const n = await j2.recoverInterrupted(() => undefined);
    assert.equal(n, 1);
    assert.equal(seen[0]?.steps.find((s) => s.name === 'convert')?.state, 'running');
    const after = await j2.get(job.id);
    assert.equal(after.state, 'failed');
    assert.match(after.error?.message ?? '', /stopped during this job/);
    assert.equal(await j2.recoverInterrupted(() => undefined), 0, 'recovery runs once');
    await second.close();
  });
});

test('a job context reaches its recovery rule; pruning keeps the newest finished jobs of a kind and target', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.db);
    const cut = await jobs.create('cycle', 'vm:1', ['fleece', 'copy']);
    await jobs.setContext(cut.id, { point: { generation: 7 } });
    const seen: unknown[] = [];
    jobs.registerRecovery('cycle', async (j) => void seen.push(j.context));
    for (let i = 0; i < 5; i++) {
      const j = await jobs.create('cycle', 'vm:1', ['fleece']);
      await jobs.succeed(j.id, null);
    }
    const other = await jobs.create('cycle', 'vm:2', ['fleece']);
    await jobs.succeed(other.id, null);
    await jobs.prune('cycle', 'vm:1', 2);
    const left = await jobs.list({ kind: 'cycle', target: 'vm:1' });
    assert.equal(left.filter((j) => j.state === 'succeeded').length, 2);
    assert.ok(
      left.some((j) => j.id === cut.id),
      'a running job is never pruned',
    );
    assert.equal((await jobs.list({ target: 'vm:2' })).length, 1, 'other targets untouched');
    await jobs.recoverInterrupted(() => undefined);
    assert.deepEqual(seen, [{ point: { generation: 7 } }]);
    await store.close();
  });
});

test('a recovery rule that fails leaves the job for the next start', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.db);
    const job = await jobs.create('fragile', null, ['x']);
    jobs.registerRecovery('fragile', async () => Promise.reject(new Error('disk busy')));
    const logged: string[] = [];
    await jobs.recoverInterrupted((msg) => void logged.push(msg));
    assert.equal((await jobs.get(job.id)).state, 'running');
    assert.match(logged[0] ?? '', /stays marked running/);
    await store.close();
  });
});

test('KeyedLock runs work for one key in order and other keys in parallel', async () => {
  const lock = new KeyedLock();
  const order: string[] = [];
  const slow = lock.run('vm1', async () => {
    await new Promise((r) => setTimeout(r, 30));
    order.push('vm1-a');
  });
  const next = lock.run('vm1', async () => void order.push('vm1-b'));
  const other = lock.run('vm2', async () => void order.push('vm2'));
  await Promise.all([slow, next, other]);
  assert.deepEqual(order, ['vm2', 'vm1-a', 'vm1-b']);
  await assert.rejects(lock.run('vm1', async () => Promise.reject(new Error('x'))));
  assert.equal(await lock.run('vm1', async () => 7), 7, 'a failure does not block the key');
});

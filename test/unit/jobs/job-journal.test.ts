import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { JobJournal, type Job } from '../../../src/jobs/job-journal.js';
import { defineJobKind, NO_CONTEXT, type JobKind, type RecoveryPolicy } from '../../../src/jobs/job-kind.js';
import { KeyedLock } from '../../../src/jobs/keyed-lock.js';

async function withStore(fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-jobs-'));
  try {
    await fn(join(dir, 'site.db'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A kind for these tests: no context unless given, rollback unless told. */
function kind(name: string, steps: string[] | null, policy: RecoveryPolicy = 'rollback'): JobKind<null> {
  return defineJobKind<null>({ kind: name, policy, steps, summary: name, context: NO_CONTEXT });
}

interface PointV1 {
  generation: number;
}
interface PointV2 {
  point: { generation: number; disks: number };
}
const pointV1 = (version = 1) =>
  defineJobKind<PointV1>({
    kind: 'cycle',
    policy: 'rollback',
    steps: ['fleece', 'copy'],
    summary: 'test cycle',
    context: {
      version,
      schema: { type: 'object', required: ['generation'], properties: { generation: { type: 'integer' } } },
    },
  });
const pointV2 = (upgrade: boolean) =>
  defineJobKind<PointV2>({
    kind: 'cycle',
    policy: 'rollback',
    steps: ['fleece', 'copy'],
    summary: 'test cycle',
    context: {
      version: 2,
      schema: {
        type: 'object',
        required: ['point'],
        properties: {
          point: {
            type: 'object',
            required: ['generation', 'disks'],
            properties: { generation: { type: 'integer' }, disks: { type: 'integer' } },
          },
        },
      },
      ...(upgrade ? { upgrade: { 1: (old: unknown) => ({ point: { ...(old as PointV1), disks: 1 } }) } } : {}),
    },
  });

/** The journal as a server would leave it when killed inside `step` of a fresh job of `k`. */
async function cutInStep<C>(file: string, k: JobKind<C>, step: string, context?: C): Promise<string> {
  const store = await openSqliteStore(file);
  const jobs = new JobJournal(store.handle);
  jobs.define(k, async () => undefined);
  const job = await jobs.create(k, 'thing', { steps: k.steps ?? [step] });
  if (context !== undefined) await jobs.setContext(k, job.id, context);
  let entered!: () => void;
  const inStep = new Promise<void>((r) => (entered = r));
  void jobs.step(job.id, step, () => {
    entered();
    return new Promise(() => undefined);
  });
  await inStep;
  await store.close();
  return job.id;
}

test('steps are journalled before and after they run; a failing step fails only itself', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    const demo = kind('demo', ['a', 'b']);
    jobs.define(demo, async () => undefined);
    const job = await jobs.create(demo, 'thing');
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
    assert.throws(() => jobs.define(demo, async () => undefined), /declared twice/);
    await assert.rejects(jobs.create(kind('undeclared', ['x']), null), /not declared/);
    await assert.rejects(jobs.create(kind('free', null), null), /not declared/);
    const free = kind('free', null);
    jobs.define(free, async () => undefined);
    await assert.rejects(jobs.create(free, null), /no fixed steps/);
    assert.deepEqual(
      (await jobs.create(free, null, { steps: ['x', 'y'] })).steps.map((s) => s.name),
      ['x', 'y'],
    );
    await store.close();
  });
});

test('rollback: a job cut by a crash gets its recovery at the next start, with the step it was in, and ends failed', async () => {
  await withStore(async (file) => {
    const copy = kind('copy', ['convert', 'register']);
    const id = await cutInStep(file, copy, 'convert');
    const second = await openSqliteStore(file);
    const j2 = new JobJournal(second.handle);
    const seen: Job[] = [];
    j2.define(copy, async (j) => void seen.push(j));
    const n = await j2.recoverInterrupted(() => undefined);
    assert.equal(n, 1);
    assert.equal(seen[0]?.steps.find((s) => s.name === 'convert')?.state, 'running');
    const after = await j2.get(id);
    assert.equal(after.state, 'failed');
    assert.match(after.error?.message ?? '', /undone \(rolled back\)/);
    assert.equal(await j2.recoverInterrupted(() => undefined), 0, 'recovery runs once');
    await second.close();
  });
});

test('resume: a cut job ends interrupted with what its recovery says, and is never pruned', async () => {
  await withStore(async (file) => {
    const op = kind('pool-op', null, 'resume');
    const id = await cutInStep(file, op, 'desktops');
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    jobs.define(op, async (j) => `taken up as a new job for ${j.target}`);
    await jobs.recoverInterrupted(() => undefined);
    const after = await jobs.get(id);
    assert.equal(after.state, 'interrupted');
    assert.equal(after.error?.code, 'JOB_INTERRUPTED');
    assert.equal(after.error?.message, 'taken up as a new job for thing');
    await jobs.prune(op, 'thing', 0);
    assert.equal((await jobs.list({ state: 'interrupted' })).length, 1);
    await store.close();
  });
});

test('a recovery that finished the work ends the job succeeded, with what it did and the result, under either policy', async () => {
  for (const policy of ['rollback', 'resume'] as const) {
    await withStore(async (file) => {
      const move = kind(`move-${policy}`, ['copy', 'switch', 'finish'], policy);
      const id = await cutInStep(file, move, 'switch');
      const store = await openSqliteStore(file);
      const jobs = new JobJournal(store.handle);
      jobs.define(move, async (j) => ({ finished: `finished ${j.target} after the cut`, result: { to: 'b' } }));
      const logged: string[] = [];
      assert.equal(await jobs.recoverInterrupted((msg) => void logged.push(msg)), 1);
      const after = await jobs.get(id);
      assert.equal(after.state, 'succeeded', policy);
      assert.equal(after.error, null, 'a finished job carries no error');
      assert.equal(after.progress, 1);
      assert.deepEqual(after.result, { recovered: 'finished thing after the cut', result: { to: 'b' } });
      // Where it was cut stays visible: the journal says what it knew, the result what recovery did.
      assert.equal(after.steps.find((s) => s.name === 'switch')?.state, 'running');
      assert.deepEqual(logged, ['recovered interrupted job']);
      assert.equal(await jobs.recoverInterrupted(() => undefined), 0, 'recovery runs once');
      await store.close();
    });
  }
});

test('a finished recovery without a result keeps null; a string or nothing still fails (rollback) as before', async () => {
  await withStore(async (file) => {
    const k = kind('del', ['rows']);
    const done = await cutInStep(file, k, 'rows');
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    jobs.define(k, async () => ({ finished: 'the rows were all gone' }));
    await jobs.recoverInterrupted(() => undefined);
    assert.deepEqual((await jobs.get(done)).result, { recovered: 'the rows were all gone', result: null });
    await store.close();
  });
  for (const answer of ['undid the copy', undefined]) {
    await withStore(async (file) => {
      const k = kind('copy', ['copy']);
      const id = await cutInStep(file, k, 'copy');
      const store = await openSqliteStore(file);
      const jobs = new JobJournal(store.handle);
      jobs.define(k, async () => answer);
      await jobs.recoverInterrupted(() => undefined);
      const after = await jobs.get(id);
      assert.equal(after.state, 'failed');
      assert.match(after.error?.message ?? '', answer ? /^undid the copy$/ : /rolled back/);
      await store.close();
    });
  }
});

test('a recovery that took the job up leaves it running for its kind to end; the next start recovers it again', async () => {
  await withStore(async (file) => {
    const move = kind('move-later', ['switch', 'finish']);
    const id = await cutInStep(file, move, 'finish');
    for (const start of [1, 2]) {
      const store = await openSqliteStore(file);
      const jobs = new JobJournal(store.handle);
      jobs.define(move, async () => ({ takenUp: `finishing, start ${start}` }));
      const logged: string[] = [];
      assert.equal(await jobs.recoverInterrupted((msg) => void logged.push(msg)), 1, `start ${start}`);
      assert.equal((await jobs.get(id)).state, 'running', 'left to its kind');
      assert.match(logged[0] ?? '', new RegExp(`taken up by its kind, running on: finishing, start ${start}`));
      if (start === 2) {
        await jobs.succeed(id, { recovered: 'finished later', result: null });
        assert.equal((await jobs.get(id)).state, 'succeeded');
        assert.equal(await jobs.recoverInterrupted(() => undefined), 0);
      }
      await store.close();
    }
  });
});

test('a context is checked against its kind when written and reaches the recovery typed', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    const cycle = pointV1();
    const seen: unknown[] = [];
    jobs.define(cycle, async (_j, ctx) => void seen.push(ctx));
    const cut = await jobs.create(cycle, 'vm:1');
    await assert.rejects(
      jobs.setContext(cycle, cut.id, { generation: 'seven' } as unknown as PointV1),
      (e: unknown) => (e as { code?: string }).code === 'STORE_ROW_INVALID',
    );
    await jobs.setContext(cycle, cut.id, { generation: 7 });
    assert.equal((await jobs.get(cut.id)).contextVersion, 1);
    for (let i = 0; i < 5; i++) {
      const j = await jobs.create(cycle, 'vm:1');
      await jobs.succeed(j.id, null);
    }
    const other = await jobs.create(cycle, 'vm:2');
    await jobs.succeed(other.id, null);
    await jobs.prune(cycle, 'vm:1', 2);
    const left = await jobs.list({ kind: 'cycle', target: 'vm:1' });
    assert.equal(left.filter((j) => j.state === 'succeeded').length, 2);
    assert.ok(
      left.some((j) => j.id === cut.id),
      'a running job is never pruned',
    );
    assert.equal((await jobs.list({ target: 'vm:2' })).length, 1, 'other targets untouched');
    await jobs.recoverInterrupted(() => undefined);
    assert.deepEqual(seen, [{ generation: 7 }]);
    await store.close();
  });
});

test('a context of an older version is upgraded before its recovery reads it', async () => {
  await withStore(async (file) => {
    const id = await cutInStep(file, pointV1(), 'copy', { generation: 7 });
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    const seen: unknown[] = [];
    jobs.define(pointV2(true), async (_j, ctx) => void seen.push(ctx));
    await jobs.recoverInterrupted(() => undefined);
    assert.deepEqual(seen, [{ point: { generation: 7, disks: 1 } }]);
    assert.equal((await jobs.get(id)).state, 'failed');
    await store.close();
  });
});

test('a context no upgrade leads to, or from a newer version, is refused: never misread, the job left failed for a person', async () => {
  for (const [writer, reader] of [
    [pointV1(), pointV2(false)],
    [pointV1(3), pointV1(1)],
  ] as const) {
    await withStore(async (file) => {
      const id = await cutInStep(file, writer as JobKind<unknown>, 'copy', { generation: 7 });
      const store = await openSqliteStore(file);
      const jobs = new JobJournal(store.handle);
      let called = false;
      jobs.define(reader as JobKind<unknown>, async () => void (called = true));
      const logged: string[] = [];
      await jobs.recoverInterrupted((msg) => void logged.push(msg));
      assert.equal(called, false, 'the recovery never sees a context it cannot read');
      const after = await jobs.get(id);
      assert.equal(after.state, 'failed');
      assert.equal(after.error?.code, 'JOB_CONTEXT_VERSION');
      assert.match(after.error?.message ?? '', /version \d, and this mamori reads version \d/);
      assert.match(logged[0] ?? '', /context cannot be read/);
      await store.close();
    });
  }
});

test('a cut job of a kind this version does not know is failed without a recovery', async () => {
  await withStore(async (file) => {
    const id = await cutInStep(file, kind('retired', ['x']), 'x');
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    await jobs.recoverInterrupted(() => undefined);
    assert.equal((await jobs.get(id)).error?.code, 'JOB_KIND_UNKNOWN');
    await store.close();
  });
});

test('a recovery rule that fails leaves the job for the next start', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    const fragile = kind('fragile', ['x']);
    jobs.define(fragile, async () => Promise.reject(new Error('disk busy')));
    const job = await jobs.create(fragile, null);
    const logged: string[] = [];
    await jobs.recoverInterrupted((msg) => void logged.push(msg));
    assert.equal((await jobs.get(job.id)).state, 'running');
    assert.match(logged[0] ?? '', /stays marked running/);
    await store.close();
  });
});

test('subscribers see every write of their job, in order, as a reader would; reflect sets what a mirrored record says', async () => {
  await withStore(async (file) => {
    const store = await openSqliteStore(file);
    const jobs = new JobJournal(store.handle);
    const demo = kind('demo', ['a', 'b']);
    jobs.define(demo, async () => undefined);
    const job = await jobs.create(demo, null);
    const other = await jobs.create(demo, null);
    const seen: string[] = [];
    const stop = jobs.subscribe(job.id, (j) => void seen.push(`${j.state}:${j.steps.map((s) => s.state).join(',')}`));
    await jobs.step(job.id, 'a', async () => undefined);
    await jobs.step(other.id, 'a', async () => undefined);
    await jobs.progress(job.id, 0.5);
    await jobs.succeed(job.id, { ok: true });
    stop();
    await jobs.fail(job.id, { code: 'INTERNAL', message: 'after unsubscribe' });
    assert.deepEqual(seen, [
      'running:running,pending',
      'running:done,pending',
      'running:done,pending',
      'succeeded:done,pending',
    ]);
    const mirrored = await jobs.create(kind('mirror', null), null, { id: 'run-abc', steps: ['x'] }).catch((e) => e);
    assert.match(String(mirrored), /not declared/);
    const runKind = kind('run', null, 'resume');
    jobs.define(runKind, async () => undefined);
    await jobs.create(runKind, 'plan-a', { id: 'run-abc', steps: ['x', 'y'] });
    await jobs.reflect('run-abc', {
      state: 'failed',
      steps: [
        { name: 'x', state: 'done' },
        { name: 'y', state: 'skipped' },
      ],
      error: { code: 'RUN_FAILED', message: 'errors' },
    });
    const r = await jobs.get('run-abc');
    assert.equal(r.state, 'failed');
    assert.equal(r.progress, 1);
    assert.deepEqual(
      r.steps.map((s) => s.state),
      ['done', 'skipped'],
    );
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

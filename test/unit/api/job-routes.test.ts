import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { JobJournal, type Job } from '../../../src/jobs/job-journal.js';
import { defineJobKind, NO_CONTEXT } from '../../../src/jobs/job-kind.js';
import { jobRoutes } from '../../../src/api/routes/jobs.js';
import { jobEventRoutes } from '../../../src/api/routes/job-events.js';
import { errorSchema, jobSchema } from '../../../src/api/schemas.js';
import { installErrorReplies } from '../../../src/api/error-replies.js';

/**
 * The job routes on a real journal (a real SQLite file): GET /job-kinds, and GET /jobs/:id/events
 * for a kind that is not a plan run (issue 20: one stream serves every kind).
 */
const COPY = defineJobKind<null>({
  kind: 'test-copy',
  policy: 'rollback',
  steps: ['read', 'write'],
  summary: 'a copy for this test',
  context: NO_CONTEXT,
});
const POOL = defineJobKind<{ pool: string }>({
  kind: 'test-pool',
  policy: 'resume',
  steps: null,
  summary: 'a pool operation for this test',
  context: { version: 3, schema: { type: 'object', required: ['pool'], properties: { pool: { type: 'string' } } } },
});

let dir: string;
let app: FastifyInstance;
let jobs: JobJournal;
let closeStore: () => Promise<void>;
let base: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-job-routes-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  closeStore = () => store.close();
  jobs = new JobJournal(store.handle);
  jobs.define(COPY, async () => undefined);
  jobs.define(POOL, async () => undefined);
  app = Fastify();
  for (const s of [errorSchema, jobSchema]) app.addSchema(s);
  installErrorReplies(app);
  await app.register(jobRoutes({ jobs }));
  await app.register(jobEventRoutes({ jobs, details: {} }));
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});
after(async () => {
  await app.close();
  await closeStore();
  await rm(dir, { recursive: true, force: true });
});

/** Reads an event stream to its end: the `job` events, in order. */
async function events(url: string, onOpen: () => Promise<void>): Promise<Job[]> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const seen: Job[] = [];
  let buffer = '';
  let opened = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = /^event: job\ndata: (.*)$/s.exec(block);
      if (data) seen.push(JSON.parse(data[1]!) as Job);
    }
    // The first event is the job as it stands: only then is the stream surely subscribed.
    if (!opened && seen.length > 0) {
      opened = true;
      void onOpen();
    }
  }
  return seen;
}

test('GET /job-kinds lists each declared kind with its policy, steps and context version', async () => {
  const r = await app.inject({ url: '/job-kinds' });
  assert.equal(r.statusCode, 200);
  const kinds = r.json() as { kind: string; policy: string; steps: string[] | null; contextVersion: number }[];
  const byKind = new Map(kinds.map((k) => [k.kind, k]));
  assert.deepEqual(byKind.get('test-copy'), {
    kind: 'test-copy',
    policy: 'rollback',
    steps: ['read', 'write'],
    contextVersion: COPY.context.version,
    summary: 'a copy for this test',
  });
  assert.equal(byKind.get('test-pool')?.policy, 'resume');
  assert.equal(byKind.get('test-pool')?.steps, null);
  assert.equal(byKind.get('test-pool')?.contextVersion, 3);
});

test('GET /jobs/:id/events follows a job of any kind: one event per journal write, in order, ending when the job ends', async () => {
  const job = await jobs.create(COPY, 'disk-a');
  const seen = await events(`${base}/jobs/${job.id}/events`, async () => {
    await jobs.step(job.id, 'read', async () => undefined);
    await jobs.step(job.id, 'write', async () => undefined);
    await jobs.succeed(job.id, { bytes: 42 });
  });
  assert.ok(seen.length >= 2, `at least the start and the end: ${seen.length}`);
  assert.equal(seen[0]!.id, job.id);
  assert.equal(seen[0]!.kind, 'test-copy');
  const last = seen.at(-1)!;
  assert.equal(last.state, 'succeeded');
  assert.deepEqual(last.result, { bytes: 42 });
  assert.deepEqual(
    last.steps.map((s) => [s.name, s.state]),
    [
      ['read', 'done'],
      ['write', 'done'],
    ],
  );
  // Never a step back: each event's steps are at least as far along as the one before.
  const rank = { pending: 0, running: 1, done: 2, failed: 2, skipped: 2 } as const;
  for (let i = 1; i < seen.length; i++)
    for (let s = 0; s < seen[i]!.steps.length; s++)
      assert.ok(rank[seen[i]!.steps[s]!.state] >= rank[seen[i - 1]!.steps[s]!.state], `event ${i} step ${s}`);
  assert.ok(seen.slice(0, -1).every((e) => e.state === 'running'));
});

test('a job already ended streams once and closes; a failed job carries its error', async () => {
  const job = await jobs.create(POOL, 'pool:p', { steps: ['grow'] });
  await jobs.fail(job.id, { code: 'POOL_FULL', message: 'no room' });
  const seen = await events(`${base}/jobs/${job.id}/events`, async () => undefined);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.state, 'failed');
  assert.deepEqual(seen[0]!.error, { code: 'POOL_FULL', message: 'no room' });
});

test('an id that is not a job id is refused before anything is read; an unknown job is a 404, not a stream', async () => {
  const bad = await app.inject({ url: '/jobs/..%2Fetc/events' });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.code, 'INVALID_INPUT');
  const missing = await app.inject({ url: '/jobs/job-nosuchjob/events' });
  assert.equal(missing.statusCode, 404);
  assert.match(String(missing.headers['content-type']), /json/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cutFailoverMessage, type FailoverJobContext } from '../../../src/site-roles/vm-failover.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { RunSummary } from '../../../src/plans/plan-report.js';

/* What a vm-failover job cut by a server stop ends with, from the runs its context recorded. */
function job(context: unknown, steps = ['failover', 'reprotect']): Job {
  return {
    id: 'job-1',
    kind: 'vm-failover',
    state: 'running',
    target: 'vm:1',
    steps: steps.map((name) => ({ name, state: 'pending' })),
    progress: 0,
    result: null,
    error: null,
    context,
    contextVersion: 1,
    createdAt: '',
    updatedAt: '',
  };
}

/** The message, given the context as the journal hands it to the recovery (read through the kind's schema). */
function message(j: Job): string | undefined {
  return cutFailoverMessage(j, j.context as FailoverJobContext | null);
}

function run(id: string, state: string, result: string | null): RunSummary {
  return { run: id, state, result } as RunSummary;
}

const base = { vm: 'fo', to: 'site-b', plan: 'failover-fo' };

test('no context: the generic message', () => {
  assert.equal(message(job(null)), undefined);
});

test('cut before any run was seen: where to look for it', () => {
  assert.match(message(job(base))!, /mamori plan history failover-fo' at site-b/);
});

test('a run still going: it goes on there, and the reprotect is named when it is still to come', () => {
  const m = message(job({ ...base, failover: run('run-1', 'running', null) }))!;
  assert.match(m, /run run-1 goes on at site-b/);
  assert.match(m, /mamori plan run failover-fo --mode reprotect/);
  const noReverse = message(job({ ...base, failover: run('run-1', 'running', null) }, ['failover']))!;
  assert.doesNotMatch(noReverse, /reprotect/);
});

test('a context without the plan (as the follower wrote it before): the plan named by the VM', () => {
  const m = message(job({ vm: 'fo', to: 'site-b', failover: run('run-1', 'done', 'success') }))!;
  assert.match(m, /mamori plan run failover-fo --mode reprotect/);
});

test('failover ended, reprotect not started: the command that starts it', () => {
  const m = message(job({ ...base, failover: run('run-1', 'done', 'success') }))!;
  assert.match(
    m,
    /fo runs at site-b; the reprotect did not start: run it at site-b with 'mamori plan run failover-fo --mode reprotect'/,
  );
});

test('every run ended well: the job had done its work', () => {
  const m = message(
    job({ ...base, failover: run('run-1', 'done', 'success'), reprotect: run('run-2', 'done', 'warnings') }),
  )!;
  assert.match(m, /which had done its work: fo runs at site-b \(run run-1\) and replicates back \(run run-2\)/);
  assert.match(
    message(job({ ...base, failover: run('run-1', 'done', 'success') }, ['failover']))!,
    /had done its work/,
  );
});

test('a run that failed: its report and how to resume it', () => {
  const m = message(job({ ...base, failover: run('run-1', 'done', 'failed') }))!;
  assert.match(m, /run run-1 at site-b ended failed.*mamori plan resume run-1/);
});

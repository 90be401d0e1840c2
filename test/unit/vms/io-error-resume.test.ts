import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { IoErrorResume, type BlockIoError } from '../../../src/vms/io-error-resume.js';

const log = pino({ level: 'silent' });
const stopEvent: BlockIoError = {
  device: '',
  'node-name': 'disk0',
  operation: 'write',
  action: 'stop',
  reason: 'No space left on device',
};

/** A QEMU that pauses on each error and runs again on `cont`, as far as this module can see. */
function fakeQemu() {
  const q = {
    state: 'running',
    resumes: 0,
    gaveUp: [] as BlockIoError[],
    pause(): void {
      q.state = 'io-error';
    },
  };
  return q;
}

/** The module over the fake; `resume` runs the VM again unless told to leave its state alone. */
function resumeFor(
  q: ReturnType<typeof fakeQemu>,
  opts: { delaysMs: number[]; quietMs?: number; resumeRuns?: boolean },
): IoErrorResume {
  return new IoErrorResume({
    runState: async () => q.state,
    resume: async () => {
      q.resumes++;
      if (opts.resumeRuns !== false) q.state = 'running';
    },
    giveUp: async (e) => void q.gaveUp.push(e),
    log,
    delaysMs: opts.delaysMs,
    ...(opts.quietMs === undefined ? {} : { quietMs: opts.quietMs }),
  });
}

const until = async (cond: () => boolean): Promise<void> => {
  while (!cond()) await new Promise((r) => setTimeout(r, 1));
};

test('an I/O-error pause is resumed once per error, and given up after the retries, leaving the VM paused', async () => {
  const q = fakeQemu();
  const r = resumeFor(q, { delaysMs: [1, 1, 1] });
  for (let i = 1; i <= 3; i++) {
    q.pause();
    r.onError(stopEvent);
    // Two requests in flight fail together: one retry for both.
    r.onError(stopEvent);
    await until(() => q.resumes === i);
  }
  q.pause();
  r.onError(stopEvent);
  assert.equal(q.state, 'io-error', 'no retry is left: the VM stays paused');
  assert.deepEqual(q.gaveUp, [stopEvent]);
  assert.equal(q.resumes, 3);
  r.stop();
});

test('report-only errors are not ours: a VM in io-error is not resumed for them', async () => {
  const q = fakeQemu();
  const r = resumeFor(q, { delaysMs: [1], resumeRuns: false });
  q.pause();
  r.onError({ ...stopEvent, action: 'report' });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(q.resumes, 0);
  r.stop();
});

test('a VM paused or stopped by someone else meanwhile is not resumed', async () => {
  const q = fakeQemu();
  const r = resumeFor(q, { delaysMs: [1], resumeRuns: false });
  r.onError(stopEvent);
  q.state = 'paused'; // an operator's pause, after QEMU's
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(q.resumes, 0);
  r.stop();
});

test('errors a quiet spell apart each get the full set of retries; none after stop()', async () => {
  const q = fakeQemu();
  let now = 0;
  const realNow = Date.now;
  Date.now = () => now;
  try {
    const r = resumeFor(q, { delaysMs: [1], quietMs: 1000 });
    for (let i = 1; i <= 3; i++) {
      now += 5000;
      q.pause();
      r.onError(stopEvent);
      await until(() => q.resumes === i);
    }
    assert.deepEqual(q.gaveUp, []);
    r.stop();
    q.pause();
    now += 5000;
    r.onError(stopEvent);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(q.resumes, 3);
  } finally {
    Date.now = realNow;
  }
});

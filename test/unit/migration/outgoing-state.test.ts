import { test } from 'node:test';
import assert from 'node:assert/strict';
import { outgoingStateOf } from '../../../src/migration/outgoing-state.js';
import type { Job } from '../../../src/jobs/job-journal.js';

type J = Pick<Job, 'state' | 'steps' | 'context'>;
const steps = (done: string[]): J['steps'] =>
  ['prepare', 'mirror', 'migrate', 'switchover', 'finish'].map((name) => ({
    name,
    state: done.includes(name) ? 'done' : 'pending',
  })) as J['steps'];
const job = (state: J['state'], done: string[], context: Record<string, unknown> = { to: 'site-b' }): J => ({
  state,
  steps: steps(done),
  context,
});

test('the source tells the destination whether its completed copy is the VM', () => {
  // Not a migration to the asking site, or none at all: unknown (the copy waits).
  assert.equal(outgoingStateOf(null, null, 'site-b'), 'unknown');
  assert.equal(outgoingStateOf(job('failed', ['prepare'], { to: 'site-c' }), null, 'site-b'), 'unknown');
  // Still running and QEMU not completed: not decided.
  assert.equal(outgoingStateOf(job('running', ['prepare', 'mirror']), 'active', 'site-b'), 'in-progress');
  // QEMU completed, though the journal has not caught up: the source never continues its guest after that.
  assert.equal(outgoingStateOf(job('running', ['prepare', 'mirror']), 'completed', 'site-b'), 'switched');
  assert.equal(outgoingStateOf(job('failed', ['prepare', 'mirror']), 'completed', 'site-b'), 'switched');
  // Recorded as switched (the flag, a switchover step, success) with QEMU gone.
  assert.equal(
    outgoingStateOf(job('failed', ['prepare', 'mirror', 'migrate'], { to: 'site-b', switched: true }), null, 'site-b'),
    'switched',
  );
  assert.equal(
    outgoingStateOf(job('failed', ['prepare', 'mirror', 'migrate', 'switchover']), null, 'site-b'),
    'switched',
  );
  assert.equal(
    outgoingStateOf(job('succeeded', ['prepare', 'mirror', 'migrate', 'switchover', 'finish']), null, 'site-b'),
    'switched',
  );
  // Failed before QEMU completed: rolled back, the guest ran on at the source.
  assert.equal(outgoingStateOf(job('failed', ['prepare', 'mirror']), 'cancelled', 'site-b'), 'rolled-back');
  assert.equal(outgoingStateOf(job('failed', ['prepare', 'mirror']), 'failed', 'site-b'), 'rolled-back');
});

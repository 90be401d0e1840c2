import { test } from 'node:test';
import assert from 'node:assert/strict';
import { outgoingStateOf, type MigrationContext } from '../../../src/migration/outgoing-state.js';
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

/** The job and the context it holds (in the product, read through the kind's schema). */
const stateOf = (j: J | null, qemu: string | null, peer: string) =>
  outgoingStateOf(j, (j?.context ?? null) as MigrationContext | null, qemu, peer);

test('the source tells the destination whether its completed copy is the VM', () => {
  // Not a migration to the asking site, or none at all: unknown (the copy waits).
  assert.equal(stateOf(null, null, 'site-b'), 'unknown');
  assert.equal(stateOf(job('failed', ['prepare'], { to: 'site-c' }), null, 'site-b'), 'unknown');
  // Still running and QEMU not completed: not decided.
  assert.equal(stateOf(job('running', ['prepare', 'mirror']), 'active', 'site-b'), 'in-progress');
  // QEMU completed, though the journal has not caught up: the source never continues its guest after that.
  assert.equal(stateOf(job('running', ['prepare', 'mirror']), 'completed', 'site-b'), 'switched');
  assert.equal(stateOf(job('failed', ['prepare', 'mirror']), 'completed', 'site-b'), 'switched');
  // Recorded as switched (the flag, a switchover step, success) with QEMU gone.
  assert.equal(
    stateOf(job('failed', ['prepare', 'mirror', 'migrate'], { to: 'site-b', switched: true }), null, 'site-b'),
    'switched',
  );
  assert.equal(stateOf(job('failed', ['prepare', 'mirror', 'migrate', 'switchover']), null, 'site-b'), 'switched');
  assert.equal(
    stateOf(job('succeeded', ['prepare', 'mirror', 'migrate', 'switchover', 'finish']), null, 'site-b'),
    'switched',
  );
  // Failed before QEMU completed: rolled back, the guest ran on at the source.
  assert.equal(stateOf(job('failed', ['prepare', 'mirror']), 'cancelled', 'site-b'), 'rolled-back');
  assert.equal(stateOf(job('failed', ['prepare', 'mirror']), 'failed', 'site-b'), 'rolled-back');
});

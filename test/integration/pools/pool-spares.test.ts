import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SiteProcess } from '../../harness/site-process.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * Spare desktops (View Composer's "spare, powered on" count): a pool keeps K desktops that no
 * user is assigned to powered on and customized, ready for the next user. Assigning one to a
 * user, or a user's session on it, makes another start; a spare that goes down is replaced;
 * spares above the target power off; a desktop powered on but not in use is no obstacle to a
 * refresh. Real QEMU under TCG.
 */
let site: SiteProcess;

before(async () => {
  site = await SiteProcess.create('site-s');
  await site.start();
  await site.cliJson('vm', 'create', 'master', '--test-guest', '--data-disk', '16M', '--memory', '96');
  await site.cliJson('vm', 'snapshot', 'master', 'v1');
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
});

async function show(): Promise<PoolView> {
  return site.cliJson<PoolView>('pool', 'show', 'sp');
}

const poweredOn = (p: PoolView): string[] =>
  p.desktops.filter((d) => !['stopped', 'crashed'].includes(d.vmState)).map((d) => d.name);
const freeOn = (p: PoolView): string[] =>
  p.desktops.filter((d) => d.user === null && !['stopped', 'crashed'].includes(d.vmState)).map((d) => d.name);

test('a pool keeps its spare desktops powered on and free: assigning one starts another, one that goes down is replaced', async () => {
  const tooMany = await site.cli(
    'pool',
    'create',
    'bad',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '2',
    '--spare',
    '3',
    '--name',
    'b-{n}',
  );
  assert.match(tooMany.stderr, /spare \(at most the size\) must be a whole number from 0 to 2.*\[OUT_OF_RANGE\]/);

  const job = await site.cliJson<Job & { result: { sparesStarted: string[] } }>(
    'pool',
    'create',
    'sp',
    '--master',
    'master',
    '--snapshot',
    'v1',
    '--size',
    '3',
    '--spare',
    '1',
    '--name',
    'sp-{n}',
  );
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  assert.deepEqual(job.result.sparesStarted, ['sp-1']);
  assert.deepEqual(poweredOn(await show()), ['sp-1']);
  await site.waitFor(
    'the spare to boot and customize',
    async () => (await show()).desktops[0]!.state === 'ready',
    240_000,
  );

  const assigned = await site.cliJson<{ sparesStarted: string[] }>(
    'pool',
    'assign',
    'sp',
    'sp-1',
    'alice@corp.example',
  );
  assert.deepEqual(assigned.sparesStarted, ['sp-2'], "sp-1 is alice's now: another free desktop powers on");
  const p = await show();
  assert.deepEqual(
    p.desktops.map((d) => d.user),
    ['alice@corp.example', null, null],
  );
  assert.deepEqual(poweredOn(p), ['sp-1', 'sp-2']);
  const taken = await site.cli('pool', 'assign', 'sp', 'sp-1', 'bob');
  assert.match(taken.stderr, /sp-1 is assigned to alice@corp\.example: unassign it first.*\[DESKTOP_ASSIGNED\]/);
  const badUser = await site.cli('pool', 'assign', 'sp', 'sp-3', 'bob smith');
  assert.match(badUser.stderr, /is not a user name.*\[INVALID_INPUT\]/);

  await site.cliJson('vm', 'kill', 'sp-2');
  await site.waitFor(
    'a free desktop to be powered on again',
    async () => (freeOn(await show()).length === 1 ? true : undefined),
    60_000,
  );
  assert.deepEqual(freeOn(await show()), ['sp-2'], 'the lowest-numbered free desktop starts');

  // A session makes a desktop in use as an assignment does: another spare powers on.
  await site.waitFor('sp-2 to run', async () => (await show()).desktops[1]!.vmState === 'running', 60_000);
  const session = await site.cliJson<{ sparesStarted: string[] }>('pool', 'session-start', 'sp', 'sp-2', 'bob');
  assert.deepEqual(session.sparesStarted, ['sp-3'], "sp-2 has bob's session now: another free desktop powers on");
  let p2 = await show();
  assert.deepEqual(
    p2.desktops.map((d) => [d.name, d.inUse, d.session?.user ?? null]),
    [
      ['sp-1', true, null],
      ['sp-2', true, 'bob'],
      ['sp-3', false, null],
    ],
  );
  const other = await site.cli('pool', 'session-start', 'sp', 'sp-2', 'carol');
  assert.match(other.stderr, /bob has a session on desktop sp-2: end it first.*\[DESKTOP_IN_SESSION\]/);
  const onAlice = await site.cli('pool', 'session-start', 'sp', 'sp-1', 'carol');
  assert.match(onAlice.stderr, /assigned to alice@corp\.example, not carol.*\[DESKTOP_ASSIGNED\]/);

  // Powered on is not in use: a refresh without --force skips only the desktops in use and
  // refreshes the running spare (powered off first, powered on again as the pool's spare).
  await site.waitFor('sp-3 to run', async () => (await show()).desktops[2]!.vmState === 'running', 60_000);
  const refreshed = await site.cliJson<
    Job & { result: { refreshed: number; skipped: string[]; sparesStarted?: string[] } }
  >('pool', 'refresh', 'sp');
  assert.equal(refreshed.state, 'succeeded', JSON.stringify(refreshed.error));
  assert.deepEqual([refreshed.result.refreshed, refreshed.result.skipped.sort()], [1, ['sp-1', 'sp-2']]);
  assert.deepEqual(refreshed.result.sparesStarted, ['sp-3'], 'the refreshed spare is powered on again');
  const shrink = await site.cli('pool', 'resize', 'sp', '--size', '1');
  assert.match(shrink.stderr, /removes desktops in use \(assigned or with a session: sp-2\).*\[VM_RUNNING\]/);

  // Spares above the target are powered off, highest-numbered first.
  await site.waitFor('sp-3 to run again', async () => (await show()).desktops[2]!.vmState === 'running', 60_000);
  const ended = await site.cliJson<{ sparesStopped: string[] }>('pool', 'session-end', 'sp', 'sp-2');
  assert.deepEqual(
    ended.sparesStopped,
    ['sp-3'],
    'sp-2 is free again: two spares for a target of one, so sp-3 powers off',
  );
  p2 = await show();
  assert.equal(p2.desktops[1]!.session, null);
  assert.deepEqual(freeOn(p2), ['sp-2']);
  assert.equal(p2.desktops[2]!.vmState, 'stopped');

  const freed = await site.cliJson<{ sparesStopped: string[] }>('pool', 'unassign', 'sp', 'sp-1');
  assert.deepEqual(freed.sparesStopped, ['sp-2']);
  p2 = await show();
  assert.equal(p2.desktops[0]!.user, null);
  assert.deepEqual(freeOn(p2), ['sp-1'], 'one spare, the target: the excess one powered off');
  assert.deepEqual(poweredOn(p2), ['sp-1']);
  assert.equal((await site.cliJson<Job>('pool', 'delete', 'sp')).state, 'succeeded');
  assert.deepEqual(await site.vmPids(), [], 'deleting the pool powered its desktops off');
});

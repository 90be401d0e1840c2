import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SiteProcess } from '../../harness/site-process.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-service.js';

/*
 * Spare desktops (View Composer's "spare, powered on" count): a pool keeps K desktops that no
 * user is assigned to powered on and customized, ready for the next user. Assigning one to a
 * user makes another start; a spare that goes down is replaced. Real QEMU under TCG.
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

const poweredOn = (p: PoolView): string[] => p.desktops.filter((d) => !['stopped', 'crashed'].includes(d.vmState)).map((d) => d.name);
const freeOn = (p: PoolView): string[] => p.desktops.filter((d) => d.user === null && !['stopped', 'crashed'].includes(d.vmState)).map((d) => d.name);

test('a pool keeps its spare desktops powered on and free: assigning one starts another, one that goes down is replaced', async () => {
  const tooMany = await site.cli('pool', 'create', 'bad', '--master', 'master', '--snapshot', 'v1', '--size', '2', '--spare', '3', '--name', 'b-{n}');
  assert.match(tooMany.stderr, /spare \(at most the size\) must be a whole number from 0 to 2.*\[OUT_OF_RANGE\]/);

  const job = await site.cliJson<Job & { result: { sparesStarted: string[] } }>('pool', 'create', 'sp', '--master', 'master', '--snapshot', 'v1', '--size', '3', '--spare', '1', '--name', 'sp-{n}');
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  assert.deepEqual(job.result.sparesStarted, ['sp-1']);
  assert.deepEqual(poweredOn(await show()), ['sp-1']);
  await site.waitFor('the spare to boot and customize', async () => (await show()).desktops[0]!.state === 'ready', 240_000);

  const assigned = await site.cliJson<{ sparesStarted: string[] }>('pool', 'assign', 'sp', 'sp-1', 'alice@corp.example');
  assert.deepEqual(assigned.sparesStarted, ['sp-2'], 'sp-1 is alice\'s now: another free desktop powers on');
  const p = await show();
  assert.deepEqual(p.desktops.map((d) => d.user), ['alice@corp.example', null, null]);
  assert.deepEqual(poweredOn(p), ['sp-1', 'sp-2']);
  const taken = await site.cli('pool', 'assign', 'sp', 'sp-1', 'bob');
  assert.match(taken.stderr, /sp-1 is assigned to alice@corp\.example: unassign it first.*\[DESKTOP_ASSIGNED\]/);
  const badUser = await site.cli('pool', 'assign', 'sp', 'sp-3', 'bob smith');
  assert.match(badUser.stderr, /is not a user name.*\[INVALID_INPUT\]/);

  await site.cliJson('vm', 'kill', 'sp-2');
  await site.waitFor('a free desktop to be powered on again', async () => freeOn(await show()).length === 1 ? true : undefined, 60_000);
  assert.deepEqual(freeOn(await show()), ['sp-2'], 'the lowest-numbered free desktop starts');

  await site.cliJson('pool', 'unassign', 'sp', 'sp-1');
  const freed = await show();
  assert.equal(freed.desktops[0]!.user, null);
  assert.deepEqual(freeOn(freed), ['sp-1', 'sp-2'], 'an excess spare is left running: powering off is not this count\'s call');
  assert.equal((await site.cliJson<Job>('pool', 'delete', 'sp')).state, 'succeeded');
  assert.deepEqual(await site.vmPids(), [], 'deleting the pool powered its desktops off');
});

import assert from 'node:assert/strict';
import type { PlanRun } from '../../src/plans/run-journal.js';
import type { SiteProcess } from './site-process.js';

/**
 * A plan run cut by a crash of the site that runs it: started with --no-wait, the server is
 * killed (kill -9) once the first recover step began (the shutdowns and final syncs of a
 * planned run are done by then), started again, the run found interrupted, then resumed with
 * `plan resume` and followed to its end. `whileInterrupted` checks what must hold in between
 * (e.g. another run of the same VMs is refused). Returns the ended run.
 */
export async function runPlanThroughCrash(
  site: SiteProcess,
  plan: string,
  mode: string,
  whileInterrupted: (runId: string) => Promise<void> = async () => undefined,
): Promise<PlanRun> {
  const report = (id: string): Promise<PlanRun> => site.cliJson<PlanRun>('plan', 'report', id, '--json');
  const started = await site.cli('plan', 'run', plan, '--mode', mode, '--no-wait');
  assert.equal(started.code, 0, started.stderr);
  const runId = /run (run-\S+) started/.exec(started.stdout)![1]!;
  await site.waitFor(
    'a recover step under way',
    async () => (await report(runId)).steps.some((s) => s.kind === 'recover' && s.state !== 'pending'),
    600_000,
  );
  await site.crashServer();
  await site.start();
  assert.equal((await report(runId)).state, 'interrupted');
  await whileInterrupted(runId);
  const resumed = await site.cli('plan', 'resume', runId);
  assert.equal(resumed.code, 0, resumed.stderr + resumed.stdout);
  return site.waitFor(
    `run ${runId} ended`,
    async () => {
      const r = await report(runId);
      return r.state === 'done' || r.state === 'cancelled' ? r : undefined;
    },
    900_000,
  );
}

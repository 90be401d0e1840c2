import type { ApiClient } from './api-client.js';
import type { Job } from './api-types.js';
import { MamoriError } from '../core/mamori-error.js';
import { printFields, printJson, printTable } from './output.js';

const USAGE =
  'usage: mamori job list [--kind KIND] [--state running|succeeded|failed|interrupted] [--target T] | job show ID | job kinds';

/**
 * `mamori job ...`: every long operation of the site (cycles, array syncs, migrations,
 * conversions, imports, exports, plan runs, pool operations, storage benchmarks) is a job of
 * the one journal; these read it.
 */
export async function jobCommand(api: ApiClient, args: string[], json: boolean): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === 'list') {
    const query = new URLSearchParams();
    for (let i = 0; i < rest.length; i += 2) {
      const flag = rest[i];
      const value = rest[i + 1];
      if (!value || !['--kind', '--state', '--target'].includes(flag ?? ''))
        throw new MamoriError('INVALID_INPUT', USAGE);
      query.set(flag!.slice(2), value);
    }
    const jobs = await api.get('/jobs', { query: Object.fromEntries(query) });
    if (json) return printJson(jobs);
    return printTable(
      jobs.map((j) => ({
        id: j.id,
        kind: j.kind,
        state: j.state,
        target: j.target,
        step: currentStep(j),
        progress: `${Math.round(j.progress * 100)}%`,
        updated: j.updatedAt,
      })),
      ['id', 'kind', 'state', 'target', 'step', 'progress', 'updated'],
    );
  }
  if (sub === 'show' && rest.length === 1) {
    const job = await api.get('/jobs/{id}', { path: { id: rest[0]! } });
    if (json) return printJson(job);
    printFields({
      id: job.id,
      kind: job.kind,
      state: job.state,
      target: job.target,
      progress: `${Math.round(job.progress * 100)}%`,
      created: job.createdAt,
      updated: job.updatedAt,
      ...(job.error ? { error: `${job.error.code}: ${job.error.message}` } : {}),
    });
    process.stdout.write('\n');
    return printTable(
      job.steps.map((s) => ({ step: s.name, state: s.state, started: s.startedAt, ended: s.endedAt })),
      ['step', 'state', 'started', 'ended'],
    );
  }
  if (sub === 'kinds' && rest.length === 0) {
    const kinds = await api.get('/job-kinds');
    if (json) return printJson(kinds);
    return printTable(
      kinds.map((k) => ({
        kind: k.kind,
        policy: k.policy,
        steps: k.steps ? k.steps.join(', ') : '(per job)',
        context: `v${k.contextVersion}`,
        summary: k.summary,
      })),
      ['kind', 'policy', 'steps', 'context', 'summary'],
    );
  }
  throw new MamoriError('INVALID_INPUT', USAGE);
}

/** The step in flight, else the last one that ended. */
function currentStep(job: Job): string | null {
  const running = job.steps.find((s) => s.state === 'running');
  if (running) return running.name;
  const ended = job.steps.filter((s) => s.state !== 'pending');
  return ended.at(-1)?.name ?? null;
}

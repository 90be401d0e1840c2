import type { ApiClient } from './api-client.js';
import type { Job } from './api-types.js';
import { ProgressBar } from './output.js';

/** Polls a job to its end, with a progress bar unless the output is JSON. */
export async function followJob(api: ApiClient, started: Job, label: string, json: boolean): Promise<Job> {
  let job = started;
  const bar = json ? null : new ProgressBar(label);
  while (job.state === 'running') {
    bar?.update(job.progress);
    // Short: the end of a job is what the caller waits for, and a poll is one small GET.
    await new Promise((r) => setTimeout(r, 100));
    job = await api.get('/jobs/{id}', { path: { id: job.id } });
  }
  bar?.update(job.state === 'succeeded' ? 1 : job.progress);
  bar?.done();
  return job;
}

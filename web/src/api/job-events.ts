import { ApiError, authHeaders, errorOf } from './client';
import type { RunWithSummary } from './domain';

/** What every `job` event holds (GET /jobs/{id}); kinds add their detail beside it. */
export interface JobEvent {
  id: string;
  kind: string;
  state: 'running' | 'succeeded' | 'failed' | 'interrupted';
  steps: { name: string; state: string; startedAt?: string; endedAt?: string }[];
  progress: number;
}

/**
 * Follows GET /jobs/{id}/events (server-sent events: one stream for every kind of job) with
 * fetch, not EventSource: only fetch can send the Authorization header. Calls `onJob` with the
 * data of each `job` event (the job, plus its kind's detail); resolves when the server ends the
 * stream (the job ended) and rejects with the API's error otherwise.
 */
export async function followJob<T = JobEvent>(id: string, onJob: (job: T) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/jobs/${encodeURIComponent(id)}/events`, { headers: authHeaders(), signal });
  if (!res.ok || !res.body) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      // Comment lines (": keep-alive") carry no data.
      const data = event
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      if (data) onJob(JSON.parse(data) as T);
    }
  }
}

/**
 * A plan run followed through its job's stream: each event carries the run the page draws. A
 * run from before runs were jobs has none: it is read once (such a run is long over).
 */
export async function followRun(id: string, onRun: (run: RunWithSummary) => void, signal: AbortSignal): Promise<void> {
  try {
    await followJob<{ run?: RunWithSummary }>(id, (j) => j.run && onRun(j.run), signal);
  } catch (e) {
    if (!(e instanceof ApiError && e.code === 'JOB_NOT_FOUND')) throw e;
    const res = await fetch(`/plan-runs/${encodeURIComponent(id)}`, { headers: authHeaders(), signal });
    if (!res.ok) throw await errorOf(res);
    onRun((await res.json()) as RunWithSummary);
  }
}

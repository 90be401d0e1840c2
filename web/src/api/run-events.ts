import { authHeaders, errorOf } from './client';
import type { RunWithSummary } from './domain';

/**
 * Follows GET /plan-runs/{id}/events (server-sent events) with fetch, not EventSource: only
 * fetch can send the Authorization header. Calls `onRun` with each `run` event; resolves when
 * the server ends the stream (the run ended) and rejects with the API's error otherwise.
 */
export async function followRun(id: string, onRun: (run: RunWithSummary) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/plan-runs/${encodeURIComponent(id)}/events`, { headers: authHeaders(), signal });
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
      if (data) onRun(JSON.parse(data) as RunWithSummary);
    }
  }
}

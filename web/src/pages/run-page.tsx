import { useEffect, useState } from 'react';
import { api, send } from '../api/client';
import type { RunWithSummary } from '../api/domain';
import { followRun } from '../api/job-events';
import { ErrorBox } from '../components/error-box';
import { RunReport } from '../components/run-report';
import { useAction } from '../components/use-action';
import { useCan } from '../components/access-context';
import { time } from '../components/format';
import { href } from '../router';

/** The wait before following a live run again after its stream dropped. */
const RECONNECT_MS = 2_000;

const STEP_MARK: Record<string, string> = { pending: '○', running: '◐', done: '●', failed: '✕', skipped: '–' };

/**
 * A plan run, live: the journal's steps as the server writes them (server-sent events), the
 * prompt to answer when the run waits, and the report when it ends.
 */
export function RunPage({ id }: { id: string }) {
  const [run, setRun] = useState<RunWithSummary>();
  const [streamError, setStreamError] = useState<unknown>();
  const [generation, setGeneration] = useState(0);
  const action = useAction();
  const can = useCan();
  useEffect(() => {
    const abort = new AbortController();
    let last: RunWithSummary | undefined;
    const seen = (r: RunWithSummary): void => {
      last = r;
      setRun(r);
    };
    void (async () => {
      // The stream ends when the run does. It also ends when the connection drops (Chromium
      // aborts requests in flight on any network change, a laptop sleeps): then, while the run
      // is still live, follow it again; the stream starts with the run as it is now.
      while (!abort.signal.aborted) {
        try {
          await followRun(id, seen, abort.signal);
          setStreamError(undefined);
        } catch (e) {
          if (abort.signal.aborted) return;
          setStreamError(e);
          // The API refused (no such run, a token gone): following again would not help.
          if (!(e instanceof TypeError)) return;
        }
        if (last && last.state !== 'running' && last.state !== 'waiting') return;
        await new Promise((r) => setTimeout(r, RECONNECT_MS));
      }
    })();
    return () => abort.abort();
  }, [id, generation]);
  const path = { id };
  const act = async (which: 'continue' | 'cancel' | 'resume'): Promise<void> => {
    const fn =
      which === 'continue'
        ? () => api.post('/plan-runs/{id}/continue', { path })
        : which === 'cancel'
          ? () => api.post('/plan-runs/{id}/cancel', { path })
          : () => api.post('/plan-runs/{id}/resume', { path });
    // A resumed run streams again: follow it anew.
    if ((await action.run(fn)) && which === 'resume') setGeneration((g) => g + 1);
  };
  const live = run?.state === 'running' || run?.state === 'waiting';
  return (
    <section className="run-page" data-state={run?.state ?? 'loading'}>
      <h2>
        Run {id}{' '}
        {run ? (
          <span className="muted">
            · {run.mode} of plan <a href={href('plans', run.plan)}>{run.plan}</a>
          </span>
        ) : null}
      </h2>
      <ErrorBox error={streamError} />
      {run ? (
        <>
          <p className="run-state">
            <span className={`badge result-${run.result ?? run.state}`}>{run.result ?? run.state}</span> started{' '}
            {time(run.startedAt)}
            {run.endedAt ? `, ended ${time(run.endedAt)}` : ''}
          </p>
          {run.state === 'waiting' ? (
            <div className="prompt" role="alert">
              <p>
                <strong>The run waits for you:</strong> <span className="prompt-message">{run.prompt}</span>
              </p>
              {can('post', '/plan-runs/{id}/continue') ? (
                <button className="primary continue" disabled={action.busy} onClick={() => act('continue')}>
                  Continue
                </button>
              ) : null}
            </div>
          ) : null}
          <div className="actions">
            {live && can('post', '/plan-runs/{id}/cancel') ? (
              <button disabled={action.busy} onClick={() => act('cancel')}>
                Cancel run
              </button>
            ) : null}
            {run.state === 'interrupted' && can('post', '/plan-runs/{id}/resume') ? (
              <button className="primary" disabled={action.busy} onClick={() => act('resume')}>
                Resume run
              </button>
            ) : null}
          </div>
          <ErrorBox error={action.error} />
          <ol className="steps">
            {run.steps.map((s) => (
              <li key={s.id} className={`step step-${s.state}`} data-step={s.id} data-state={s.state}>
                <span className="mark">{STEP_MARK[s.state] ?? '?'}</span> {s.label}
                {s.message ? <span className="muted"> · {s.message}</span> : null}
              </li>
            ))}
          </ol>
          {!live ? <RunReport run={run} download={(format) => download(id, format)} /> : null}
        </>
      ) : null}
    </section>
  );
}

/** The report through the API (it needs the token), saved by the browser as a file. */
async function download(id: string, format: 'html' | 'json'): Promise<void> {
  const res = await send('GET', `/plan-runs/${encodeURIComponent(id)}?format=${format}`);
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = `mamori-${id}.${format}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

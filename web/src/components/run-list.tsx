import { api } from '../api/client';
import type { RunSummary } from '../api/domain';
import { ErrorBox } from './error-box';
import { useLoad } from './use-load';
import { seconds, time } from './format';
import { href } from '../router';

/** Plan runs (of one plan, or all), newest first; each opens its run page and report. */
export function RunList({ plan }: { plan?: string }) {
  const runs = useLoad(
    async () => (await api.get('/plan-runs', plan ? { query: { plan } } : {})) as unknown as RunSummary[],
    [plan],
    10_000,
  );
  return (
    <>
      <ErrorBox error={runs.error} />
      {runs.data?.length === 0 ? <p className="muted">No runs yet.</p> : null}
      <table className="runs">
        <thead>
          <tr>
            <th>run</th>
            <th>plan</th>
            <th>mode</th>
            <th>result</th>
            <th>started</th>
            <th>took</th>
            <th>RTO</th>
            <th>steps</th>
          </tr>
        </thead>
        <tbody>
          {runs.data?.map((r) => (
            <tr key={r.run} data-run={r.run}>
              <td>
                <a href={href('runs', r.run)}>{r.run}</a>
              </td>
              <td>{r.plan}</td>
              <td>{r.mode}</td>
              <td>
                <span className={`badge result-${r.result ?? r.state}`}>{r.result ?? r.state}</span>
              </td>
              <td>{time(r.startedAt)}</td>
              <td>{seconds(r.durationSec)}</td>
              <td>{seconds(r.rtoSec)}</td>
              <td>
                {r.steps.done}/{r.steps.total}
                {r.steps.failed ? `, ${r.steps.failed} failed` : ''}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

import { useState } from 'react';
import { api } from '../api/client';
import { ErrorBox } from '../components/error-box';
import { useLoad } from '../components/use-load';
import { time } from '../components/format';

/** Job kinds by what the operator looks for. */
const FILTERS: Record<string, (kind: string) => boolean> = {
  all: () => true,
  pools: (k) => k.startsWith('pool-'),
  conversions: (k) => k === 'vm-convert' || k === 'vm-export' || k === 'disk-import',
  migrations: (k) => k === 'vm-migration' || k === 'vm-failover',
  replication: (k) => k === 'replication-cycle',
};

/** Long operations of this site (pools, conversions, migrations) with their progress. */
export function JobsPage() {
  const [filter, setFilter] = useState('all');
  const jobs = useLoad(() => api.get('/jobs', { query: { limit: '100' } }), [], 3_000);
  const shown = (jobs.data ?? []).filter((j) => FILTERS[filter]!(j.kind));
  return (
    <section>
      <h2>Jobs</h2>
      <div className="actions">
        {Object.keys(FILTERS).map((f) => (
          <button key={f} className={f === filter ? 'primary' : ''} onClick={() => setFilter(f)}>
            {f}
          </button>
        ))}
      </div>
      <ErrorBox error={jobs.error} />
      {shown.length === 0 ? <p className="muted">No jobs of this kind.</p> : null}
      <table className="jobs">
        <thead>
          <tr>
            <th>job</th>
            <th>kind</th>
            <th>target</th>
            <th>state</th>
            <th>progress</th>
            <th>step</th>
            <th>updated</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((j) => (
            <tr key={j.id} data-job={j.id}>
              <td>
                <code>{j.id}</code>
              </td>
              <td>{j.kind}</td>
              <td>{j.target ?? '-'}</td>
              <td>
                <span className={`badge job-${j.state}`}>{j.state}</span>
                {j.error ? (
                  <span className="muted">
                    {' '}
                    {j.error.code}: {j.error.message}
                  </span>
                ) : null}
              </td>
              <td>
                <progress max={1} value={j.progress} /> {Math.round(j.progress * 100)}%
              </td>
              <td>{j.steps.at(-1)?.name ?? '-'}</td>
              <td>{time(j.updatedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

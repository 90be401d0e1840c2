import { useState } from 'react';
import { api, type ResponseOf } from '../api/client';
import { ErrorBox } from '../components/error-box';
import { useLoad } from '../components/use-load';
import { ago, time } from '../components/format';

type Incident = ResponseOf<'/events', 'get'>[number];

/** What the incident is about: the VM or site by name (details as raised), else its target id. */
function subject(i: Incident): string {
  const d = i.details ?? {};
  if (typeof d['vm'] === 'string') return d['vm'];
  if (typeof d['peer'] === 'string' && i.target.startsWith('site:')) return `site ${d['peer']}`;
  return i.target;
}

/**
 * Incidents of this site (a violated RPO, a failed cycle, an unreachable peer), open ones
 * first, each with what to do about it: the page an operator opens when the count in the
 * navigation bar is not zero.
 */
export function EventsPage() {
  const [openOnly, setOpenOnly] = useState(false);
  const events = useLoad(
    () => api.get('/events', { query: { limit: '200', ...(openOnly ? { open: 'true' } : {}) } }),
    [openOnly],
    5_000,
  );
  const list = events.data ?? [];
  // Open incidents first (newest first within each group, as the API orders them).
  const shown = [...list.filter((i) => i.clearedAt === null), ...list.filter((i) => i.clearedAt !== null)];
  return (
    <section>
      <h2>Events</h2>
      <div className="actions">
        <label>
          <input type="checkbox" checked={openOnly} onChange={(e) => setOpenOnly(e.target.checked)} /> open only
        </label>
      </div>
      <ErrorBox error={events.error} />
      {events.data && shown.length === 0 ? (
        <p className="muted">{openOnly ? 'No open incidents.' : 'No incidents.'}</p>
      ) : null}
      <table className="events">
        <thead>
          <tr>
            <th>state</th>
            <th>kind</th>
            <th>VM / site</th>
            <th>since</th>
            <th>what happened</th>
            <th>remedy</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((i) => (
            <tr
              key={i.id}
              data-incident={i.id}
              data-kind={i.kind}
              data-state={i.clearedAt === null ? 'open' : 'cleared'}
            >
              <td>
                <span className={`badge ${i.clearedAt === null ? (i.severity === 'critical' ? 'bad' : 'warn') : 'ok'}`}>
                  {i.clearedAt === null ? `open (${i.severity})` : 'cleared'}
                </span>
              </td>
              <td>
                <code>{i.kind}</code>
              </td>
              <td>{subject(i)}</td>
              <td title={i.openedAt}>
                {time(i.openedAt)}
                <br />
                <span className="muted">
                  {i.clearedAt === null
                    ? `open for ${ago(i.openedAt).replace(/ ago$/, '')}`
                    : `cleared ${time(i.clearedAt)}`}
                </span>
              </td>
              <td>{i.message}</td>
              <td className="remedy">{i.remedy ?? <span className="muted">-</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

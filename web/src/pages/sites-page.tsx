import { api } from '../api/client';
import { ErrorBox } from '../components/error-box';
import { useLoad } from '../components/use-load';
import { ago } from '../components/format';

/** Paired sites as `mamori site list` shows them, and the generation of each VM replicated to them. */
export function SitesPage() {
  const peers = useLoad(() => api.get('/sites'), [], 15_000);
  const replication = useLoad(() => api.get('/replication'), [], 15_000);
  return (
    <section>
      <h2>Paired sites</h2>
      <ErrorBox error={peers.error} />
      {peers.data?.length === 0 ? (
        <p className="muted">
          No paired sites: <code>mamori site pair URL --token PEER_ADMIN_TOKEN</code> pairs one.
        </p>
      ) : null}
      <table className="sites">
        <thead>
          <tr>
            <th>site</th>
            <th>URL</th>
            <th>direction</th>
            <th>reachability</th>
            <th>round trip</th>
            <th>clock offset</th>
            <th>checked</th>
            <th>VMs replicated there (generation)</th>
          </tr>
        </thead>
        <tbody>
          {peers.data?.map((p) => (
            <tr key={p.name} data-site={p.name}>
              <td>{p.name}</td>
              <td>
                <code>{p.url ?? '-'}</code>
              </td>
              <td>{p.direction}</td>
              <td>
                <span className={`badge ${p.status.state === 'reachable' ? 'ok' : 'bad'}`}>{p.status.state}</span>
                {p.status.error ? <span className="muted"> {p.status.error.message}</span> : null}
              </td>
              <td>{p.status.rttMs == null ? '-' : `${p.status.rttMs} ms`}</td>
              <td className={Math.abs(p.status.clockOffsetMs ?? 0) > 2000 ? 'warn' : ''}>
                {p.status.clockOffsetMs == null
                  ? '-'
                  : `${p.status.clockOffsetMs > 0 ? '+' : ''}${p.status.clockOffsetMs} ms`}
              </td>
              <td>{ago(p.status.checkedAt)}</td>
              <td>
                {replication.data
                  ?.filter((r) => r.to === p.name)
                  .map((r) => `${r.vm} (${r.generation ?? '-'})`)
                  .join(', ') || '-'}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="muted">
        A VM's replication generation rises with each committed cycle: the source's dirty bitmap and the newest recovery
        point there agree on it.
      </p>
    </section>
  );
}

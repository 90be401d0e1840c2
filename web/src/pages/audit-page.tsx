import { useState } from 'react';
import { api, type ResponseOf } from '../api/client';
import { ErrorBox } from '../components/error-box';
import { useLoad } from '../components/use-load';
import { time } from '../components/format';

type Verification = ResponseOf<'/audit/verify', 'get'>;

/**
 * Who changed what on this site (and which tokens were refused), newest first, and a check
 * of the log's hash chain: an entry edited, removed or reordered in the database shows here.
 */
export function AuditPage() {
  const [token, setToken] = useState('');
  const [since, setSince] = useState('');
  const [failedOnly, setFailedOnly] = useState(false);
  const [check, setCheck] = useState<{ result?: Verification; error?: unknown; busy: boolean }>({ busy: false });
  const sinceIso = since && !Number.isNaN(Date.parse(since)) ? new Date(since).toISOString() : undefined;
  const entries = useLoad(
    () =>
      api.get('/audit', {
        query: {
          limit: '500',
          ...(token.trim() ? { token: token.trim() } : {}),
          ...(sinceIso ? { since: sinceIso } : {}),
        },
      }),
    [token, sinceIso],
    10_000,
  );
  const shown = (entries.data ?? []).filter((e) => !failedOnly || e.status >= 400);
  const verify = (): void => {
    setCheck({ busy: true });
    // The count verified and the rows shown should agree: load the newest rows too.
    entries.reload();
    api.get('/audit/verify').then(
      (result) => setCheck({ result, busy: false }),
      (error: unknown) => setCheck({ error, busy: false }),
    );
  };
  return (
    <section>
      <h2>Audit log</h2>
      <div className="actions">
        <input placeholder="token id" aria-label="token id" value={token} onChange={(e) => setToken(e.target.value)} />
        <label>
          since{' '}
          <input type="datetime-local" aria-label="since" value={since} onChange={(e) => setSince(e.target.value)} />
        </label>
        <label>
          <input type="checkbox" checked={failedOnly} onChange={(e) => setFailedOnly(e.target.checked)} /> failed only
        </label>
        <button onClick={verify} disabled={check.busy}>
          {check.busy ? 'Verifying…' : 'Verify chain'}
        </button>
        {check.result ? (
          check.result.ok ? (
            <span className="badge ok" data-audit-verify="ok">
              intact: {check.result.entries} entries
            </span>
          ) : (
            <span className="badge bad" data-audit-verify="broken">
              broken at #{check.result.firstBad?.seq} ({check.result.firstBad?.problem}):{' '}
              {check.result.firstBad?.message}
            </span>
          )
        ) : null}
      </div>
      <ErrorBox error={entries.error ?? check.error} />
      {entries.data && shown.length === 0 ? (
        <p className="muted">No audit entries{token || sinceIso || failedOnly ? ' match' : ' yet'}.</p>
      ) : null}
      <table className="audit">
        <thead>
          <tr>
            <th>#</th>
            <th>at</th>
            <th>token</th>
            <th>from</th>
            <th>call</th>
            <th>target</th>
            <th>result</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((e) => (
            <tr key={e.seq} data-audit={e.seq}>
              <td>{e.seq}</td>
              <td>{time(e.at)}</td>
              <td>
                {e.tokenId ? (
                  <>
                    <code>{e.tokenId}</code> <span className="muted">{e.role}</span>
                  </>
                ) : (
                  <span className="muted">none</span>
                )}
              </td>
              <td>{e.source}</td>
              <td>
                <code>
                  {e.method} {e.route}
                </code>
              </td>
              <td>
                {e.target
                  ? Object.entries(e.target)
                      .map(([k, v]) => `${k}=${v}`)
                      .join(' ')
                  : '-'}
              </td>
              <td>
                <span className={`badge ${e.status >= 400 ? 'bad' : 'ok'}`}>{e.status}</span>
                {e.errorCode ? <span className="muted"> {e.errorCode}</span> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

import { useState } from 'react';
import type { DataLoss, RunWithSummary } from '../api/domain';
import { ErrorBox } from './error-box';
import { seconds } from './format';

/** The end of a run: its RTO and, per VM, the point used, RTO and data loss; the report as HTML or JSON. */
export function RunReport({
  run,
  download,
}: {
  run: RunWithSummary;
  download: (format: 'html' | 'json') => Promise<void>;
}) {
  const [error, setError] = useState<unknown>();
  const s = run.summary;
  const save = (format: 'html' | 'json') => () => download(format).catch(setError);
  return (
    <div className="panel report">
      <h3>Report</h3>
      <p>
        <strong className={`result-${s.result ?? s.state}`}>{s.result ?? s.state}</strong> in {seconds(s.durationSec)} ·
        RTO <strong className="rto">{seconds(s.rtoSec)}</strong> (slowest VM) · {s.steps.done} of {s.steps.total} steps
        done
        {s.steps.failed ? `, ${s.steps.failed} failed` : ''}
        {s.steps.skipped ? `, ${s.steps.skipped} skipped` : ''}
      </p>
      {run.error ? <p className="bad">{run.error}</p> : null}
      {s.vms.length > 0 ? (
        <table className="report-vms">
          <thead>
            <tr>
              <th>priority</th>
              <th>VM</th>
              <th>recovery point</th>
              <th>RTO</th>
              <th>data loss</th>
              <th>IP</th>
              <th>outcome</th>
            </tr>
          </thead>
          <tbody>
            {s.vms.map((v) => (
              <tr key={v.vm} data-vm={v.vm}>
                <td>{v.priority}</td>
                <td>{v.vm}</td>
                <td>{v.point ?? '-'}</td>
                <td>{seconds(v.rtoSec)}</td>
                <td className="data-loss" title={lossBasis(v.dataLoss)}>
                  {lossText(v.dataLoss)}
                </td>
                <td>{v.ip ?? '-'}</td>
                <td className={v.error ? 'bad' : ''}>{v.error ?? 'ok'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <div className="actions">
        <button className="download-html" onClick={save('html')}>
          Download HTML report
        </button>
        <button className="download-json" onClick={save('json')}>
          Download JSON
        </button>
      </div>
      <ErrorBox error={error} />
    </div>
  );
}

/** Both bounds, never a bare figure: a lower bound alone says so ("at least"). */
function lossText(d: DataLoss | null): string {
  if (d === null) return 'unknown';
  if (d.atMostSec === 0) return 'none';
  if (d.atMostSec === null) return `at least ${seconds(d.atLeastSec)}`;
  return `${seconds(d.atLeastSec)} to ${seconds(d.atMostSec)}`;
}

function lossBasis(d: DataLoss | null): string {
  if (d === null) return 'nothing known of the protected VM after the point';
  const at = (x: { source: string; at: string | null }) => `${x.source}${x.at ? ` at ${x.at}` : ''}`;
  return `at least from ${at(d.atLeastFrom)}; at most from ${at(d.atMostFrom)}`;
}

import { useState } from 'react';
import { api, type ResponseOf } from '../api/client';
import type { WriteLogReport } from '../api/domain';
import { ErrorBox } from '../components/error-box';
import { LagChart, type LagPoint } from '../components/lag-chart';
import { useAction } from '../components/use-action';
import { useCan } from '../components/access-context';
import { useLoad } from '../components/use-load';
import { ago, bytes, seconds, time } from '../components/format';
import { href } from '../router';

type Status = ResponseOf<'/replication', 'get'>[number];

/** Replication of this site's VMs: RPO target, lag, last point, throughput; per VM the lag chart and its points. */
export function ReplicationPage({ selected }: { selected: string | undefined }) {
  const all = useLoad(() => api.get('/replication'), [], 5_000);
  const status = all.data?.find((s) => s.vm === selected);
  return (
    <section>
      <h2>Replication</h2>
      <ErrorBox error={all.error} />
      {all.data?.length === 0 ? (
        <p className="muted">No VM of this site is replicated (replication lives at the protected site).</p>
      ) : null}
      <table className="replication">
        <thead>
          <tr>
            <th>VM</th>
            <th>to</th>
            <th>state</th>
            <th>RPO target</th>
            <th>lag</th>
            <th>last point</th>
            <th>throughput</th>
            <th>generation</th>
            <th>replica storage</th>
            <th>last error</th>
          </tr>
        </thead>
        <tbody>
          {all.data?.map((s) => (
            <tr key={s.vm} data-vm={s.vm} className={s.vm === selected ? 'selected' : ''}>
              <td>
                <a href={href('replication', s.vm)}>{s.vm}</a>
              </td>
              <td>{s.to}</td>
              <td>{s.state}</td>
              <td>{seconds(s.rpoSeconds)}</td>
              <td className={s.rpoViolated ? 'bad' : ''}>
                {seconds(s.lagSeconds)}
                {s.rpoViolated ? ' (over RPO)' : ''}
              </td>
              <td>{ago(s.lastPointAt)}</td>
              <td>{s.lastCycle ? `${bytes(Number(s.lastCycle['throughputBps'] ?? 0))}/s` : '-'}</td>
              <td>{s.generation ?? '-'}</td>
              <td data-storage>
                {s.replica
                  ? `${s.replica.points} points, ${bytes(s.replica.bytes + s.replica.seedBytes)}, chain ${s.replica.chainLength}`
                  : '-'}
              </td>
              <td className="muted">{s.lastError ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {status ? <VmReplication key={status.vm} status={status} onChange={all.reload} /> : null}
      <HeldReplicas />
    </section>
  );
}

/** The recovery side: replicas this site holds for its peers, and what each takes on disk. */
function HeldReplicas() {
  const held = useLoad(() => api.get('/site-replicas'), [], 15_000);
  if (!held.data || held.data.length === 0) return null;
  return (
    <div className="panel">
      <h3>Replicas held here</h3>
      <table className="replicas">
        <thead>
          <tr>
            <th>replica</th>
            <th>VM</th>
            <th>from</th>
            <th>state</th>
            <th>points</th>
            <th>chain</th>
            <th>on disk</th>
          </tr>
        </thead>
        <tbody>
          {held.data.map((r) => (
            <tr key={r.id} data-replica={r.id}>
              <td>{r.id}</td>
              <td>{r.vmName}</td>
              <td>{r.sourceSite}</td>
              <td>{r.state}</td>
              <td>{r.storage?.points ?? '-'}</td>
              <td>{r.storage?.chainLength ?? '-'}</td>
              <td>{r.storage ? bytes(r.storage.bytes + r.storage.seedBytes) : '-'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function VmReplication({ status, onChange }: { status: Status; onChange: () => void }) {
  const path = { name: status.vm };
  const points = useLoad(() => api.get('/vms/{name}/replication/points', { path }), [status.vm, status.lastPointAt]);
  const action = useAction();
  const can = useCan();
  const [verified, setVerified] = useState<{ point: string; report: WriteLogReport }>();
  const lagPoints = (points.data ?? []).filter((p): p is LagPoint & typeof p => !!p.time && !!p.committedAt);
  const verify = async (pointId: string): Promise<void> => {
    const r = await action.run(() => api.post('/vms/{name}/replication/verify', { path, body: { pointId } }));
    if (r) setVerified({ point: r.point?.time ?? pointId, report: r.report as unknown as WriteLogReport });
  };
  return (
    <div className="panel">
      <h3>
        {status.vm} → {status.to}
      </h3>
      {can('post', '/vms/{name}/replication/sync') ? (
        <div className="actions">
          <button
            disabled={action.busy}
            onClick={async () => {
              await action.run(() => api.post('/vms/{name}/replication/sync', { path }));
              onChange();
            }}
          >
            Sync now
          </button>
          <button
            disabled={action.busy}
            onClick={async () => {
              await action.run(() =>
                status.state === 'paused'
                  ? api.post('/vms/{name}/replication/resume', { path })
                  : api.post('/vms/{name}/replication/pause', { path }),
              );
              onChange();
            }}
          >
            {status.state === 'paused' ? 'Resume' : 'Pause'}
          </button>
        </div>
      ) : null}
      <ErrorBox error={action.error ?? points.error} />
      {status.continuous ? <ContinuousJournal status={status} /> : null}
      {status.continuous ? null : (
        <>
          {/* The lag of cycle points: a continuous replica's is its journal's, above. */}
          <h4>Lag over time</h4>
          <LagChart points={lagPoints} rpoSeconds={status.rpoSeconds} now={Date.now()} />
        </>
      )}
      <h4>Recovery points at {status.to}</h4>
      <table className="points">
        <thead>
          <tr>
            <th>point</th>
            <th>consistency</th>
            <th>committed</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {[...lagPoints].reverse().map((p) => (
            <tr key={p.id}>
              <td>{time(p.time)}</td>
              <td>{p.consistency}</td>
              <td>{time(p.committedAt)}</td>
              <td>
                {can('post', '/vms/{name}/replication/verify') ? (
                  <button disabled={action.busy || !p.id} onClick={() => p.id && verify(p.id)}>
                    Verify
                  </button>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {verified ? (
        <div className="verify-report">
          <strong>Write log of the point {time(verified.point)}</strong>: {verified.report.records} records, gap-free up
          to {verified.report.gapFreePrefix}, last {verified.report.lastSequence ?? '-'}, {verified.report.gaps.length}{' '}
          gaps, {verified.report.torn.length} torn.
        </div>
      ) : null}
    </div>
  );
}

/**
 * A continuous replica's journal: its session now, the window of points in time at the recovery
 * site, and a time picked on it read back there (the write-log verifier at that instant).
 */
function ContinuousJournal({ status }: { status: Status }) {
  const path = { name: status.vm };
  const j = status.journal;
  const checkpoints = useLoad(
    () => api.get('/vms/{name}/replication/checkpoints', { path }),
    [status.vm, j?.basePointId ?? null],
  );
  const action = useAction();
  const can = useCan();
  const list = checkpoints.data ?? [];
  const [picked, setPicked] = useState<number>();
  const index = picked === undefined ? list.length - 1 : Math.min(picked, list.length - 1);
  const at = list[index]?.time;
  const [read, setRead] = useState<{ at: string; report: WriteLogReport }>();
  return (
    <div className="journal" data-journal={j?.state ?? 'none'}>
      <h4>Continuous journal</h4>
      <p>
        {j
          ? `${j.state}${j.group ? `, checkpoints shared with group ${j.group}` : ''}; ${status.to} holds up to ${time(j.shippedAt)}` +
            (j.backlogBytes > 0 ? `, ${bytes(j.backlogBytes)} waiting` : '') +
            (j.error ? ` (${j.error})` : '')
          : 'not running: replication is paused or the VM is stopped, and cycles protect it'}
        {status.continuous
          ? ` · a checkpoint every ${seconds(status.continuous.checkpointSeconds)}, a window of ${seconds(status.continuous.journalSeconds)}`
          : ''}
      </p>
      <ErrorBox error={checkpoints.error ?? action.error} />
      {list.length > 0 ? (
        <div className="window">
          <span className="muted">
            window {time(list[0]!.time)} – {time(list.at(-1)!.time)}, {list.length} points in time
          </span>
          <input
            type="range"
            aria-label="point in time"
            min={0}
            max={list.length - 1}
            value={index}
            onChange={(e) => setPicked(Number(e.target.value))}
          />
          <span data-picked>{time(at)}</span>
          {can('post', '/vms/{name}/replication/verify') ? (
            <button
              disabled={action.busy || at === undefined}
              onClick={async () => {
                const r = await action.run(() => api.post('/vms/{name}/replication/verify', { path, body: { at } }));
                if (r && at) setRead({ at, report: r.report as unknown as WriteLogReport });
              }}
            >
              Read back at this time
            </button>
          ) : null}
        </div>
      ) : null}
      {read ? (
        <div className="verify-report">
          <strong>Write log as of {time(read.at)}</strong>: {read.report.records} records, gap-free up to{' '}
          {read.report.gapFreePrefix}, last {read.report.lastSequence ?? '-'}, {read.report.gaps.length} gaps,{' '}
          {read.report.torn.length} torn.
        </div>
      ) : null}
    </div>
  );
}

import { useState } from 'react';
import { api } from '../api/client';
import type { DryRun, PlanView, RunMode, RunWithSummary } from '../api/domain';
import { ErrorBox } from '../components/error-box';
import { PlanGraph } from '../components/plan-graph';
import { TypedConfirm } from '../components/typed-confirm';
import { useAction } from '../components/use-action';
import { useCan } from '../components/access-context';
import { useLoad } from '../components/use-load';
import { seconds } from '../components/format';
import { go } from '../router';
import { RunList } from '../components/run-list';

const MODES: { mode: RunMode; label: string; destructive: boolean }[] = [
  { mode: 'test', label: 'Test recovery', destructive: false },
  { mode: 'cleanup', label: 'Clean up a test', destructive: false },
  { mode: 'planned', label: 'Planned migration', destructive: true },
  { mode: 'disaster', label: 'Disaster recovery', destructive: true },
  { mode: 'reprotect', label: 'Reprotect', destructive: true },
  { mode: 'failback', label: 'Failback', destructive: true },
];

/** One plan: its graph, a dry run of any mode, and runs (a destructive mode asks for the plan's name). */
export function PlanPage({ name }: { name: string }) {
  const path = { name };
  const plan = useLoad(async () => (await api.get('/plans/{name}', { path })) as unknown as PlanView, [name]);
  const [mode, setMode] = useState<RunMode>('test');
  // A test or disaster recovery may take an earlier point: the newest point at or before it
  // (for a continuous replica, any checkpoint of its journal's window).
  const [pointTime, setPointTime] = useState('');
  const timed =
    (mode === 'test' || mode === 'disaster') && pointTime.trim() !== '' ? { pointTime: pointTime.trim() } : {};
  const [dry, setDry] = useState<DryRun>();
  const [confirm, setConfirm] = useState<'run' | 'delete' | null>(null);
  const action = useAction();
  const can = useCan();
  const chosen = MODES.find((m) => m.mode === mode)!;
  const dryRun = async (): Promise<void> => {
    const r = await action.run(() => api.post('/plans/{name}/runs', { path, body: { mode, dryRun: true, ...timed } }));
    if (r) setDry(r as unknown as DryRun);
  };
  const run = async (): Promise<void> => {
    setConfirm(null);
    const r = await action.run(() => api.post('/plans/{name}/runs', { path, body: { mode, ...timed } }));
    if (r) go('runs', (r as unknown as RunWithSummary).id);
  };
  const remove = async (): Promise<void> => {
    setConfirm(null);
    if (await action.run(async () => (await api.delete('/plans/{name}', { path }), true))) go('plans');
  };
  return (
    <section>
      <h2>Plan {name}</h2>
      <ErrorBox error={plan.error} />
      {plan.data ? (
        <>
          <p className="muted">
            {plan.data.spec.description} · recovers VMs of {plan.data.protectedSite} · at most{' '}
            {plan.data.spec.concurrency} VMs at once
          </p>
          <PlanGraph plan={plan.data} />
        </>
      ) : null}
      {can('post', '/plans/{name}/runs') ? (
        <div className="actions run-controls">
          <select
            aria-label="run mode"
            value={mode}
            onChange={(e) => {
              setMode(e.target.value as RunMode);
              setDry(undefined);
            }}
          >
            {MODES.map((m) => (
              <option key={m.mode} value={m.mode}>
                {m.label}
              </option>
            ))}
          </select>
          {mode === 'test' || mode === 'disaster' ? (
            <input
              aria-label="point in time"
              placeholder="point in time (ISO 8601; newest if empty)"
              value={pointTime}
              onChange={(e) => setPointTime(e.target.value)}
            />
          ) : null}
          <button className="dry-run" disabled={action.busy} onClick={dryRun}>
            Dry run
          </button>
          <button
            className={`run ${chosen.destructive ? 'danger' : 'primary'}`}
            disabled={action.busy}
            onClick={() => (chosen.destructive ? setConfirm('run') : run())}
          >
            Run {chosen.label.toLowerCase()}
            {chosen.destructive ? '…' : ''}
          </button>
          {can('delete', '/plans/{name}') ? (
            <button className="danger" disabled={action.busy} onClick={() => setConfirm('delete')}>
              Delete plan…
            </button>
          ) : null}
        </div>
      ) : null}
      {confirm === 'run' ? (
        <TypedConfirm
          name={name}
          action={`${chosen.label} with plan ${name}`}
          onCancel={() => setConfirm(null)}
          onConfirm={run}
        />
      ) : null}
      {confirm === 'delete' ? (
        <TypedConfirm name={name} action={`Delete plan ${name}`} onCancel={() => setConfirm(null)} onConfirm={remove} />
      ) : null}
      <ErrorBox error={action.error} />
      {dry ? (
        <div className="panel dry-run-result">
          <h3>Dry run: {dry.mode}</h3>
          <p>
            Predicted RTO:{' '}
            {dry.predictedRtoSec === null ? 'unknown (no earlier run of this mode)' : seconds(dry.predictedRtoSec)}
            {dry.inventoryFresh ? '' : ' · the protected site did not answer: its last inventory is used'}
          </p>
          <ol>
            {dry.steps.map((s, i) => (
              <li key={i} data-kind={s.kind}>
                {s.label}
              </li>
            ))}
          </ol>
        </div>
      ) : null}
      <h3>Runs of this plan</h3>
      <RunList plan={name} />
    </section>
  );
}

import { useEffect, useRef, useState } from 'react';
import { api } from '../api/client';
import type { components } from '../api/schema';
import { ErrorBox } from '../components/error-box';
import { TypedConfirm } from '../components/typed-confirm';
import { useAction } from '../components/use-action';
import { useCan } from '../components/access-context';
import { useLoad } from '../components/use-load';
import { ago, bytes } from '../components/format';
import { href } from '../router';

type Vm = components['schemas']['Vm'];

/** VMs of this site: state, heartbeat, disks, the serial console's tail; start, stop, migrate, delete. */
export function VmsPage({ selected }: { selected: string | undefined }) {
  const vms = useLoad(() => api.get('/vms'), [], 5_000);
  const vm = vms.data?.find((v) => v.name === selected);
  return (
    <section>
      <h2>Virtual machines</h2>
      <ErrorBox error={vms.error} />
      <table className="vms">
        <thead>
          <tr>
            <th>VM</th>
            <th>state</th>
            <th>heartbeat</th>
            <th>vCPUs</th>
            <th>memory</th>
            <th>disks</th>
          </tr>
        </thead>
        <tbody>
          {vms.data?.map((v) => (
            <tr key={v.id} data-vm={v.name} className={v.name === selected ? 'selected' : ''}>
              <td>
                <a href={href('vms', v.name)}>{v.name}</a>
              </td>
              <td>
                <span className={`badge state-${v.state}`}>{v.state}</span>
                {v.stateReason ? <span className="muted"> {v.stateReason}</span> : null}
              </td>
              <td>{ago(v.lastHeartbeatAt)}</td>
              <td>{v.vcpus}</td>
              <td>{v.memoryMiB} MiB</td>
              <td>
                {v.disks
                  .map(
                    (d) =>
                      `${d.name ?? '?'} (${d.kind === 'rdm' ? `RDM ${d.rdmMode ?? ''}` : `image ${d.format ?? ''}`}, ${bytes(d.sizeBytes)})`,
                  )
                  .join(', ')}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {vms.data?.length === 0 ? <p className="muted">No VMs on this site.</p> : null}
      {vm ? <VmDetail key={vm.name} vm={vm} onChange={vms.reload} /> : null}
    </section>
  );
}

function VmDetail({ vm, onChange }: { vm: Vm; onChange: () => void }) {
  const action = useAction();
  const [confirm, setConfirm] = useState<'delete' | 'migrate' | null>(null);
  const [target, setTarget] = useState('');
  const serial = useLoad(
    () => api.get('/vms/{name}/console', { path: { name: vm.name }, query: { lines: '30' } }),
    [vm.name],
    5_000,
  );
  // The newest console lines are the ones that matter: keep the view at the bottom.
  const log = useRef<HTMLPreElement>(null);
  useEffect(() => {
    if (log.current) log.current.scrollTop = log.current.scrollHeight;
  }, [serial.data]);
  const act = async (fn: () => Promise<unknown>): Promise<void> => {
    setConfirm(null);
    await action.run(fn);
    onChange();
  };
  const path = { name: vm.name };
  const can = useCan();
  return (
    <div className="panel vm-detail">
      <h3>{vm.name}</h3>
      <div className="actions">
        {can('post', '/vms/{name}/start') ? (
          <button disabled={action.busy} onClick={() => act(() => api.post('/vms/{name}/start', { path, body: {} }))}>
            Start
          </button>
        ) : null}
        {can('post', '/vms/{name}/stop') ? (
          <button disabled={action.busy} onClick={() => act(() => api.post('/vms/{name}/stop', { path, body: {} }))}>
            Stop
          </button>
        ) : null}
        {can('post', '/vms/{name}/migrate') ? (
          <>
            <input
              placeholder="peer site"
              value={target}
              onChange={(e) => setTarget(e.target.value)}
              aria-label="migrate to site"
            />
            <button disabled={action.busy || !target} onClick={() => setConfirm('migrate')}>
              Migrate…
            </button>
          </>
        ) : null}
        {can('delete', '/vms/{name}') ? (
          <button className="danger" disabled={action.busy} onClick={() => setConfirm('delete')}>
            Delete…
          </button>
        ) : null}
      </div>
      {confirm === 'migrate' ? (
        <TypedConfirm
          name={vm.name}
          action={`Migrate ${vm.name} live to ${target}`}
          onCancel={() => setConfirm(null)}
          onConfirm={() => act(() => api.post('/vms/{name}/migrate', { path, body: { to: target } }))}
        />
      ) : null}
      {confirm === 'delete' ? (
        <TypedConfirm
          name={vm.name}
          action={`Delete ${vm.name}`}
          onCancel={() => setConfirm(null)}
          onConfirm={() => act(() => api.delete('/vms/{name}', { path }))}
        />
      ) : null}
      <ErrorBox error={action.error} />
      <dl className="fields">
        <dt>machine</dt>
        <dd>
          {vm.machineType}, {vm.firmware}
        </dd>
        <dt>network</dt>
        <dd>{vm.nics.map((n) => `${n.network ?? '?'} ${n.mac ?? ''}`).join(', ') || '-'}</dd>
        <dt>last heartbeat</dt>
        <dd>{vm.lastHeartbeat ?? '-'}</dd>
      </dl>
      <h4>Console</h4>
      <ErrorBox error={serial.error} />
      <pre className="console-log" ref={log}>
        {serial.data?.lines?.join('\n') ?? ''}
      </pre>
    </div>
  );
}

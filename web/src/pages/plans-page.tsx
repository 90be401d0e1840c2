import { api } from '../api/client';
import type { PlanView } from '../api/domain';
import { ErrorBox } from '../components/error-box';
import { useLoad } from '../components/use-load';
import { time } from '../components/format';
import { href } from '../router';

/** Recovery plans kept at this (the recovery) site. */
export function PlansPage() {
  // The route passes plans through whole (additionalProperties): their shape is the server's PlanView.
  const plans = useLoad(async () => (await api.get('/plans')) as unknown as PlanView[], [], 15_000);
  return (
    <section>
      <h2>Recovery plans</h2>
      <ErrorBox error={plans.error} />
      {plans.data?.length === 0 ? (
        <p className="muted">
          No plans on this site: <code>mamori plan apply PLAN.yaml</code> at the recovery site makes one.
        </p>
      ) : null}
      <table className="plans">
        <thead>
          <tr>
            <th>plan</th>
            <th>protected site</th>
            <th>VMs</th>
            <th>priorities</th>
            <th>inventory taken</th>
          </tr>
        </thead>
        <tbody>
          {plans.data?.map((p) => (
            <tr key={p.name} data-plan={p.name}>
              <td>
                <a href={href('plans', p.name)}>{p.name}</a>
              </td>
              <td>{p.protectedSite}</td>
              <td>{p.vms.map((v) => v.name).join(', ')}</td>
              <td>{[...new Set(p.vms.map((v) => v.priority))].sort().join(', ')}</td>
              <td>{time(p.inventoryTakenAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

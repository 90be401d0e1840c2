import { api } from '../api/client';
import { useLoad } from './use-load';

/**
 * The count of open incidents beside "Events" in the navigation bar, on every page: an
 * operator looking at plans still sees that an RPO is violated. Nothing while none is open.
 */
export function OpenIncidents() {
  const open = useLoad(() => api.get('/events', { query: { open: 'true', limit: '1000' } }), [], 10_000);
  const n = open.data?.length ?? 0;
  if (n === 0) return null;
  return (
    <span className="badge bad nav-count" data-open-incidents={n} title={`${n} open incident${n === 1 ? '' : 's'}`}>
      {n}
    </span>
  );
}

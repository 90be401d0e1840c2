import { useEffect, useState } from 'react';
import { session, type ApiError } from './api/client';
import { LoginPage } from './pages/login-page';
import { SitesPage } from './pages/sites-page';
import { VmsPage } from './pages/vms-page';
import { ReplicationPage } from './pages/replication-page';
import { PlansPage } from './pages/plans-page';
import { PlanPage } from './pages/plan-page';
import { RunPage } from './pages/run-page';
import { HistoryPage } from './pages/history-page';
import { JobsPage } from './pages/jobs-page';
import { AuditPage } from './pages/audit-page';
import { EventsPage } from './pages/events-page';
import { OpenIncidents } from './components/open-incidents';
import { href, useRoute } from './router';
import { loadAccess, type Access } from './api/access';
import { AccessProvider } from './components/access-context';

/** Each section with the API route it reads: a role that may not read it does not see the section. */
const SECTIONS = [
  ['sites', 'Sites', '/sites'],
  ['vms', 'VMs', '/vms'],
  ['replication', 'Replication', '/replication'],
  ['plans', 'Recovery plans', '/plans'],
  ['history', 'History', '/plan-runs'],
  ['jobs', 'Jobs', '/jobs'],
  ['events', 'Events', '/events'],
  ['audit', 'Audit', '/audit'],
] as const;

/** The signed-in shell: the site's name, the sections, and the page the hash names. */
export function App() {
  const [token, setToken] = useState(session.token());
  const [loginError, setLoginError] = useState<ApiError>();
  const [site, setSite] = useState('');
  const [access, setAccess] = useState<Access>();
  const route = useRoute();
  useEffect(() => {
    // A token the API stops accepting (revoked, or the site's database replaced) ends the session.
    session.onUnauthorized = (e) => {
      session.clear();
      setLoginError(e);
      setToken(null);
    };
    void fetch('/health')
      .then((r) => r.json() as Promise<{ site: string }>)
      .then(
        (h) => setSite(h.site),
        () => undefined,
      );
  }, []);
  useEffect(() => {
    setAccess(undefined);
    if (token) void loadAccess().then(setAccess, () => undefined);
  }, [token]);
  if (!token) {
    return (
      <LoginPage
        site={site}
        error={loginError}
        onLogin={(t) => {
          session.set(t);
          setLoginError(undefined);
          setToken(t);
        }}
      />
    );
  }
  const [section = 'sites', ...rest] = route;
  if (!access)
    return (
      <div className="shell">
        <main>
          <p className="muted">Signing in…</p>
        </main>
      </div>
    );
  const sections = SECTIONS.filter(([, , read]) => access.can('get', read));
  return (
    <AccessProvider access={access}>
      <div className="shell" data-role={access.role}>
        <header>
          <span className="brand">mamori</span>
          <span className="site-name" title="the site this console talks to">
            {site}
          </span>
          <nav>
            {sections.map(([id, label]) => (
              <a
                key={id}
                href={href(id)}
                className={section === id || (section === 'runs' && id === 'history') ? 'active' : ''}
              >
                {label}
                {id === 'events' ? <OpenIncidents /> : null}
              </a>
            ))}
          </nav>
          <span className="role" title="the role of the token this console signed in with">
            {access.name} ({access.role})
          </span>
          <button
            className="logout"
            onClick={() => {
              session.clear();
              setToken(null);
            }}
          >
            Log out
          </button>
        </header>
        <main>
          {sections.some(([id]) => id === section || (section === 'runs' && id === 'history')) ? (
            page(section, rest)
          ) : (
            <p className="muted">Your role ({access.role}) cannot see this page.</p>
          )}
        </main>
      </div>
    </AccessProvider>
  );
}

function page(section: string, rest: string[]) {
  const [id] = rest;
  switch (section) {
    case 'vms':
      return <VmsPage selected={id} />;
    case 'replication':
      return <ReplicationPage selected={id} />;
    case 'plans':
      return id ? <PlanPage name={id} /> : <PlansPage />;
    case 'runs':
      return id ? <RunPage id={id} /> : <HistoryPage />;
    case 'history':
      return <HistoryPage />;
    case 'jobs':
      return <JobsPage />;
    case 'events':
      return <EventsPage />;
    case 'audit':
      return <AuditPage />;
    default:
      return <SitesPage />;
  }
}

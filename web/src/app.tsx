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
import { href, useRoute } from './router';

const SECTIONS = [
  ['sites', 'Sites'], ['vms', 'VMs'], ['replication', 'Replication'], ['plans', 'Recovery plans'], ['history', 'History'], ['jobs', 'Jobs'], ['audit', 'Audit'],
] as const;

/** The signed-in shell: the site's name, the sections, and the page the hash names. */
export function App() {
  const [token, setToken] = useState(session.token());
  const [loginError, setLoginError] = useState<ApiError>();
  const [site, setSite] = useState('');
  const route = useRoute();
  useEffect(() => {
    // A token the API stops accepting (revoked, or the site's database replaced) ends the session.
    session.onUnauthorized = (e) => {
      session.clear();
      setLoginError(e);
      setToken(null);
    };
    void fetch('/health').then((r) => r.json() as Promise<{ site: string }>).then((h) => setSite(h.site), () => undefined);
  }, []);
  if (!token) {
    return <LoginPage site={site} error={loginError} onLogin={(t) => { session.set(t); setLoginError(undefined); setToken(t); }} />;
  }
  const [section = 'sites', ...rest] = route;
  return (
    <div className="shell">
      <header>
        <span className="brand">mamori</span>
        <span className="site-name" title="the site this console talks to">{site}</span>
        <nav>
          {SECTIONS.map(([id, label]) => (
            <a key={id} href={href(id)} className={section === id || (section === 'runs' && id === 'history') ? 'active' : ''}>{label}</a>
          ))}
        </nav>
        <button className="logout" onClick={() => { session.clear(); setToken(null); }}>Log out</button>
      </header>
      <main>{page(section, rest)}</main>
    </div>
  );
}

function page(section: string, rest: string[]) {
  const [id] = rest;
  switch (section) {
    case 'vms': return <VmsPage selected={id} />;
    case 'replication': return <ReplicationPage selected={id} />;
    case 'plans': return id ? <PlanPage name={id} /> : <PlansPage />;
    case 'runs': return id ? <RunPage id={id} /> : <HistoryPage />;
    case 'history': return <HistoryPage />;
    case 'jobs': return <JobsPage />;
    case 'audit': return <AuditPage />;
    default: return <SitesPage />;
  }
}

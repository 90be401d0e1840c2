import { RunList } from '../components/run-list';

/** Every plan run of this site, newest first; each opens its report. */
export function HistoryPage() {
  return (
    <section>
      <h2>History</h2>
      <RunList />
    </section>
  );
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SiteMetrics, type MetricSources } from '../../../src/metrics/site-metrics.js';
import { histogramSeries, parseMetrics, sampleValue } from '../../harness/prometheus-text.js';

function fakeSources(over: Partial<MetricSources> = {}): MetricSources & { calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  const count =
    <T>(name: string, v: T) =>
    async (): Promise<T> => {
      calls[name] = (calls[name] ?? 0) + 1;
      return v;
    };
  return {
    calls,
    replication: count('replication', [
      { vm: 'web', lagSeconds: 4.2, rpoSeconds: 30, rpoViolated: false },
      { vm: 'db', lagSeconds: null, rpoSeconds: 10, rpoViolated: true },
    ]),
    arrayGroups: count('arrayGroups', [
      { group: 'shop', lagSeconds: 61, rpoViolated: true },
      { group: 'idle', lagSeconds: null, rpoViolated: false },
    ]),
    jobs: count('jobs', [
      { kind: 'replication-cycle', state: 'succeeded', count: 7 },
      { kind: 'replication-cycle', state: 'failed', count: 1 },
    ]),
    jobSteps: count('jobSteps', [{ kind: 'replication-cycle', state: 'done', count: 40 }]),
    planRuns: count('planRuns', [{ mode: 'test', result: 'succeeded', count: 2 }]),
    openIncidents: count('openIncidents', [{ kind: 'site.peer-unreachable', count: 1 }]),
    ...over,
  };
}

const FAMILIES: [string, string][] = [
  ['mamori_replication_lag_seconds', 'GAUGE'],
  ['mamori_replication_rpo_seconds', 'GAUGE'],
  ['mamori_replication_rpo_violated', 'GAUGE'],
  ['mamori_replication_sent_bytes_total', 'COUNTER'],
  ['mamori_replication_cycles_total', 'COUNTER'],
  ['mamori_replication_cycle_duration_seconds', 'HISTOGRAM'],
  ['mamori_array_group_lag_seconds', 'GAUGE'],
  ['mamori_array_group_rpo_violated', 'GAUGE'],
  ['mamori_jobs', 'GAUGE'],
  ['mamori_job_steps', 'GAUGE'],
  ['mamori_plan_runs', 'GAUGE'],
  ['mamori_incidents_open', 'GAUGE'],
  ['mamori_http_request_duration_seconds', 'HISTOGRAM'],
];

test('every family parses with its TYPE and HELP, and the gauges show what the sources say', async () => {
  const sources = fakeSources();
  const m = new SiteMetrics(sources);
  m.cycleEnded({ vm: 'web', outcome: 'ok', durationMs: 1500, bytesSent: 65536 });
  m.cycleEnded({ vm: 'web', outcome: 'ok', durationMs: 2500, bytesSent: 4096 });
  m.cycleEnded({ vm: 'web', outcome: 'failed', durationMs: 300, bytesSent: 0 });
  m.requestEnded({ method: 'GET', route: '/vms/:name', statusCode: 200, durationMs: 12 });
  m.requestEnded({ method: 'GET', route: '/vms/:name', statusCode: 404, durationMs: 3 });
  const text = await m.text();
  assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
  const f = parseMetrics(text);
  for (const [name, type] of FAMILIES) {
    assert.equal(f.get(name)?.type, type, `${name} is a ${type}:\n${text}`);
    assert.ok((f.get(name)?.help ?? '').length > 10, `${name} has a HELP line`);
  }
  assert.deepEqual(
    [...f.keys()].filter((n) => !n.startsWith('mamori_')),
    [],
    'every name has the mamori_ prefix',
  );

  assert.equal(sampleValue(f, 'mamori_replication_lag_seconds', { vm: 'web' }), 4.2);
  assert.equal(
    sampleValue(f, 'mamori_replication_lag_seconds', { vm: 'db' }),
    undefined,
    'no lag before the first point',
  );
  assert.equal(sampleValue(f, 'mamori_replication_rpo_seconds', { vm: 'db' }), 10);
  assert.equal(sampleValue(f, 'mamori_replication_rpo_violated', { vm: 'db' }), 1);
  assert.equal(sampleValue(f, 'mamori_replication_rpo_violated', { vm: 'web' }), 0);
  assert.equal(sampleValue(f, 'mamori_replication_sent_bytes_total', { vm: 'web' }), 69632);
  assert.equal(
    sampleValue(f, 'mamori_replication_sent_bytes_total', { vm: 'db' }),
    0,
    'a replicated VM without cycles yet counts 0',
  );
  assert.equal(sampleValue(f, 'mamori_replication_cycles_total', { vm: 'web', outcome: 'ok' }), 2);
  assert.equal(sampleValue(f, 'mamori_replication_cycles_total', { vm: 'web', outcome: 'failed' }), 1);
  assert.equal(sampleValue(f, 'mamori_replication_cycles_total', { vm: 'db', outcome: 'failed' }), 0);
  assert.equal(sampleValue(f, 'mamori_array_group_lag_seconds', { group: 'shop' }), 61);
  assert.equal(sampleValue(f, 'mamori_array_group_lag_seconds', { group: 'idle' }), undefined);
  assert.equal(sampleValue(f, 'mamori_array_group_rpo_violated', { group: 'shop' }), 1);
  assert.equal(sampleValue(f, 'mamori_jobs', { kind: 'replication-cycle', state: 'failed' }), 1);
  assert.equal(sampleValue(f, 'mamori_job_steps', { kind: 'replication-cycle', state: 'done' }), 40);
  assert.equal(sampleValue(f, 'mamori_plan_runs', { mode: 'test', result: 'succeeded' }), 2);
  assert.equal(sampleValue(f, 'mamori_incidents_open', { kind: 'site.peer-unreachable' }), 1);

  const cycles = histogramSeries(text, 'mamori_replication_cycle_duration_seconds');
  assert.deepEqual(
    cycles.map((s) => [s.labels, s.count, s.sum]),
    [[{ vm: 'web' }, 3, 4.3]],
  );
  assert.equal(cycles[0]!.buckets['2'], 2, 'two cycles took 2 s or less');
  assert.equal(cycles[0]!.buckets['+Inf'], 3);
  const requests = histogramSeries(text, 'mamori_http_request_duration_seconds');
  assert.deepEqual(requests.map((s) => [s.labels, s.count]).sort(), [
    [{ method: 'GET', route: '/vms/:name', status_code: '200' }, 1],
    [{ method: 'GET', route: '/vms/:name', status_code: '404' }, 1],
  ]);
  // One read of the replication status serves the five families that show it.
  assert.equal(sources.calls['replication'], 1);
  assert.equal(sources.calls['arrayGroups'], 1);
});

test('series of VMs and groups that went away vanish from the gauges at the next scrape', async () => {
  let vms = [{ vm: 'web', lagSeconds: 1, rpoSeconds: 30, rpoViolated: false }];
  const m = new SiteMetrics(fakeSources({ replication: async () => vms, arrayGroups: async () => [] }));
  assert.equal(sampleValue(parseMetrics(await m.text()), 'mamori_replication_rpo_seconds', { vm: 'web' }), 30);
  vms = [];
  const f = parseMetrics(await m.text());
  assert.deepEqual(f.get('mamori_replication_rpo_seconds')?.metrics, []);
  assert.deepEqual(f.get('mamori_array_group_lag_seconds')?.metrics, []);
});

test('two sites in one process keep their metrics apart', async () => {
  const a = new SiteMetrics(fakeSources());
  const b = new SiteMetrics(fakeSources({ replication: async () => [] }));
  a.cycleEnded({ vm: 'web', outcome: 'ok', durationMs: 10, bytesSent: 1 });
  assert.equal(sampleValue(parseMetrics(await a.text()), 'mamori_replication_sent_bytes_total', { vm: 'web' }), 1);
  assert.equal(
    sampleValue(parseMetrics(await b.text()), 'mamori_replication_sent_bytes_total', { vm: 'web' }),
    undefined,
  );
});

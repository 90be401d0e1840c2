import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { SiteProcess } from '../../harness/site-process.js';
import { WebhookReceiver, type ReceivedAlert } from '../../harness/webhook-receiver.js';
import { histogramSeries, parseMetrics, sampleValue } from '../../harness/prometheus-text.js';
import { freePort } from '../../../src/core/free-port.js';
import { runProcess } from '../../../src/core/run-process.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';

/*
 * Two real sites on the host's loopback (no namespaces: the webhook receiver of this test
 * process must be reachable from site-a). site-a replicates a stopped test guest to site-b;
 * Prometheus' view of it is scraped over HTTPS with the admin token. Then site-b's server
 * stops: site-a raises site.peer-unreachable and replication.cycle-failed, posts each once to
 * the webhook, survives a restart of its own server without posting them again, and
 * posts each 'resolved' once when site-b is back.
 */
let a: SiteProcess;
let b: SiteProcess;
let receiver: WebhookReceiver;
/** Peers are checked every second here (30 s by default). */
const ENV = { MAMORI_PEER_CHECK_MS: '1000' };

before(async () => {
  receiver = await WebhookReceiver.start();
  // Fixed ports: a restarted server must come back where its peer knows it.
  a = await SiteProcess.create('obs-a', { listen: `127.0.0.1:${await freePort('127.0.0.1')}` });
  b = await SiteProcess.create('obs-b', { listen: `127.0.0.1:${await freePort('127.0.0.1')}` });
  await Promise.all([a.start(ENV), b.start(ENV)]);
  await a.cliJson('site', 'pair', b.url, '--token', await b.adminToken());
  await b.cliJson('site', 'pair', a.url, '--token', await a.adminToken());
});
after(async () => {
  await a?.destroy();
  await b?.destroy();
  await receiver?.close();
});

/** GET /metrics as Prometheus does: HTTPS trusting the site's CA, the admin token as a bearer. */
async function scrape(
  site: SiteProcess,
  token: string | null,
): Promise<{ status: number; type: string; text: string }> {
  const ca = await readFile(site.caCertFile, 'utf8');
  return new Promise((resolve, reject) => {
    const req = request(
      new URL('/metrics', site.url),
      { ca, headers: token ? { authorization: `Bearer ${token}` } : {} },
      (res) => {
        let text = '';
        res
          .setEncoding('utf8')
          .on('data', (c: string) => (text += c))
          .on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), text }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function metrics(): Promise<{ text: string; families: ReturnType<typeof parseMetrics> }> {
  const r = await scrape(a, await a.adminToken());
  assert.equal(r.status, 200, r.text);
  return { text: r.text, families: parseMetrics(r.text) };
}

test('GET /metrics needs the token and shows a replicated VM: lag, RPO, bytes, cycles, durations, API requests', async () => {
  const anonymous = await scrape(a, null);
  assert.equal(anonymous.status, 401);
  assert.equal((JSON.parse(anonymous.text) as { error: { code: string } }).error.code, 'UNAUTHORIZED');

  // A stopped VM replicates too (its images are read through a storage daemon): no guest CPU on two loaded cores.
  const vm = await a.cliJson<{ id: string }>('vm', 'create', 'pg', '--test-guest', '--data-disk', '16M');
  // A guest that never ran left its data disk all zeros, which a cycle does not send: 1 MiB of data to send.
  const data = (
    await a.cliJson<{ vmId: string | null; sizeBytes: number; path: string; format: string }[]>('disk', 'list')
  ).find((d) => d.vmId === vm.id && d.sizeBytes === 16 * 1024 * 1024);
  assert.ok(data, 'the data disk');
  await runProcess('qemu-io', ['-f', data.format, '-c', 'write -P 0x5a 0 1M', data.path], { timeoutMs: 30_000 });
  await a.cliJson('replicate', 'enable', 'pg', '--to', 'obs-b', '--rpo', '10s');
  await a.waitFor(
    'the first point',
    async () => (await a.cliJson<ReplicationStatus>('replicate', 'status', 'pg')).lastPointAt,
    180_000,
  );

  const r = await scrape(a, await a.adminToken());
  assert.match(r.type, /^text\/plain; version=0\.0\.4/);
  // The point is recorded at the commit, the cycle counted when its job ends, a moment later.
  const { families: f, text } = await a.waitFor(
    'the cycle counted',
    async () => {
      const m = await metrics();
      return (sampleValue(m.families, 'mamori_replication_cycles_total', { vm: 'pg', outcome: 'ok' }) ?? 0) >= 1
        ? m
        : undefined;
    },
    30_000,
  );
  for (const name of [
    'mamori_replication_lag_seconds',
    'mamori_replication_rpo_seconds',
    'mamori_replication_rpo_violated',
    'mamori_incidents_open',
    'mamori_jobs',
    'mamori_job_steps',
    'mamori_plan_runs',
  ]) {
    assert.equal(f.get(name)?.type, 'GAUGE', name);
  }
  assert.equal(sampleValue(f, 'mamori_replication_rpo_seconds', { vm: 'pg' }), 10);
  assert.ok((sampleValue(f, 'mamori_replication_lag_seconds', { vm: 'pg' }) ?? -1) >= 0, text);
  assert.ok((sampleValue(f, 'mamori_replication_cycles_total', { vm: 'pg', outcome: 'ok' }) ?? 0) >= 1, text);
  assert.ok(
    (sampleValue(f, 'mamori_replication_sent_bytes_total', { vm: 'pg' }) ?? 0) >= 1024 * 1024,
    'the first cycle sent the written MiB',
  );
  assert.ok((sampleValue(f, 'mamori_jobs', { kind: 'replication-cycle', state: 'succeeded' }) ?? 0) >= 1);
  assert.ok((sampleValue(f, 'mamori_job_steps', { kind: 'replication-cycle', state: 'done' }) ?? 0) >= 1);
  const cycles = histogramSeries(text, 'mamori_replication_cycle_duration_seconds').find(
    (s) => s.labels['vm'] === 'pg',
  );
  assert.ok(cycles && cycles.count >= 1 && cycles.sum > 0, JSON.stringify(cycles));
  // The CLI's calls, by route pattern, never by URL; /metrics itself is not counted.
  const routes = histogramSeries(text, 'mamori_http_request_duration_seconds').map((s) => s.labels);
  assert.ok(
    routes.some((l) => l['method'] === 'GET' && l['route'] === '/vms/:name/replication' && l['status_code'] === '200'),
    JSON.stringify(routes),
  );
  assert.ok(
    routes.some((l) => l['method'] === 'POST' && l['route'] === '/vms' && l['status_code'] === '201'),
    JSON.stringify(routes),
  );
  assert.ok(
    !routes.some((l) => (l['route'] ?? '').includes('pg') || l['route'] === '/metrics'),
    JSON.stringify(routes),
  );
});

test('an unreachable peer and the failed cycles are posted to the webhook once firing and once resolved, across a restart', async () => {
  const bad = await a.cli('alerts', 'webhook', 'set', 'ftp://example.com/x');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /only http and https are supported.*\[ALERT_WEBHOOK_INVALID\]/);
  const set = await a.cliJson<{ url: string }>('alerts', 'webhook', 'set', receiver.url);
  assert.equal(set.url, receiver.url);
  assert.deepEqual(await a.cliJson('alerts', 'webhook', 'test'), { url: receiver.url, delivered: true });

  const peerDown = (): ReceivedAlert[] => receiver.of('site.peer-unreachable', 'site:obs-b');
  const cycleFailed = (): ReceivedAlert[] => receiver.of('replication.cycle-failed');
  await b.stopServer();
  await a.waitFor(
    'site.peer-unreachable firing',
    async () => peerDown().length === 1 && cycleFailed().length === 1,
    120_000,
  );
  assert.equal(peerDown()[0]!.status, 'firing');
  assert.equal(peerDown()[0]!.site, 'obs-a');
  assert.equal(peerDown()[0]!.incident.severity, 'critical');
  assert.match(cycleFailed()[0]!.incident.message, /a replication cycle of pg to obs-b failed/);
  const { families: f } = await metrics();
  assert.equal(sampleValue(f, 'mamori_incidents_open', { kind: 'site.peer-unreachable' }), 1);
  assert.ok((sampleValue(f, 'mamori_replication_cycles_total', { vm: 'pg', outcome: 'failed' }) ?? 0) >= 1);

  // The incidents stay open across a restart of site-a's server; nothing is posted again.
  await a.stopServer();
  await a.start(ENV);
  await b.start(ENV);
  await a.waitFor('both resolved', async () => peerDown().length === 2 && cycleFailed().length === 2, 180_000);
  for (const list of [peerDown(), cycleFailed()]) {
    assert.deepEqual(
      list.map((x) => x.status),
      ['firing', 'resolved'],
    );
    assert.equal(list[0]!.incident.id, list[1]!.incident.id);
    assert.equal(list[0]!.incident.clearedAt, null);
    assert.ok(list[1]!.incident.clearedAt !== null);
  }
  // No transition of any incident (an RPO violation may have come and gone too) was posted twice.
  const seen = receiver.received
    .filter((x) => x.incident.kind !== 'alert-test')
    .map((x) => `${x.incident.id}/${x.status}`);
  assert.deepEqual(seen, [...new Set(seen)]);

  const alerts = await a.cliJson<{
    open: { kind: string }[];
    webhook: { url: string };
    deliveries: { pending: number; failed: number; delivered: number };
  }>('alerts', 'list');
  assert.equal(alerts.webhook.url, receiver.url);
  assert.ok(
    !alerts.open.some((i) => i.kind === 'site.peer-unreachable' || i.kind === 'replication.cycle-failed'),
    JSON.stringify(alerts.open),
  );
  assert.equal(alerts.deliveries.failed, 0);
  assert.ok(alerts.deliveries.delivered >= 4);
  const human = await a.cli('alerts', 'list');
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, new RegExp(`webhook +${receiver.url.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));

  assert.deepEqual(await a.cliJson('alerts', 'webhook', 'clear'), { removed: true });
  assert.equal((await a.cliJson<{ webhook: unknown }>('alerts', 'list')).webhook, null);
});

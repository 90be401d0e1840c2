import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { SiteProcess } from '../../harness/site-process.js';
import { WebhookReceiver, type ReceivedAlert } from '../../harness/webhook-receiver.js';
import { freePort } from '../../../src/core/free-port.js';
import { runProcess } from '../../../src/core/run-process.js';

/*
 * The RPO-violation alert end to end: two real site servers on the loopback, a real
 * replication whose RPO is violated, and a webhook receiver of this process on 127.0.0.1.
 * The violation is real, not injected: the first cycle of a VM whose data disk holds 3 MiB,
 * under a bandwidth limit of 64 KiB/s, takes about 48 s, so its point is already older than
 * the 30 s RPO when it commits. The next cycle (nothing changed) brings the lag back under
 * the RPO and the incident clears. Each transition reaches the receiver once.
 */
let a: SiteProcess;
let b: SiteProcess;
let receiver: WebhookReceiver;

before(async () => {
  receiver = await WebhookReceiver.start('127.0.0.1');
  a = await SiteProcess.create('rpo-a', { listen: `127.0.0.1:${await freePort('127.0.0.1')}` });
  b = await SiteProcess.create('rpo-b', { listen: `127.0.0.1:${await freePort('127.0.0.1')}` });
  await Promise.all([a.start(), b.start()]);
  await a.cliJson('site', 'pair', b.url, '--token', await b.adminToken());
  await b.cliJson('site', 'pair', a.url, '--token', await a.adminToken());
});
after(async () => {
  await a?.destroy();
  await b?.destroy();
  await receiver?.close();
});

interface CycleJob {
  state: string;
  result: { mode: string; bytesSent: number; durationMs: number } | null;
}

interface Incident {
  id: string;
  kind: string;
  target: string;
  openedAt: string;
  clearedAt: string | null;
  remedy: string | null;
}

test('a violated RPO is posted to the webhook once firing, with its remedy, and once resolved', async () => {
  await a.cliJson('alerts', 'webhook', 'set', receiver.url);
  // A stopped test guest: its data disk is read through a storage daemon, no guest CPU.
  const vm = await a.cliJson<{ id: string }>('vm', 'create', 'pg', '--test-guest', '--data-disk', '16M');
  const data = (
    await a.cliJson<{ vmId: string | null; sizeBytes: number; path: string; format: string }[]>('disk', 'list')
  ).find((d) => d.vmId === vm.id && d.sizeBytes === 16 * 1024 * 1024);
  assert.ok(data, 'the data disk');
  await runProcess('qemu-io', ['-f', data.format, '-c', 'write -P 0x5a 0 3M', data.path], { timeoutMs: 30_000 });
  await a.cliJson('replicate', 'enable', 'pg', '--to', 'rpo-b', '--rpo', '30s', '--bandwidth', '64K');

  const target = `vm:${vm.id}`;
  const rpo = (): ReceivedAlert[] => receiver.of('replication.rpo-violated', target);
  await a.waitFor('the RPO alert firing', async () => rpo().length >= 1, 300_000);
  const firing = rpo()[0]!;
  assert.equal(firing.status, 'firing');
  assert.equal(firing.site, 'rpo-a');
  assert.equal(firing.incident.severity, 'warning');
  assert.equal(firing.incident.clearedAt, null);
  assert.match(firing.incident.message, /replication of pg to rpo-b is behind its RPO of 30s/);
  assert.deepEqual(
    { ...(firing.incident.details as Record<string, unknown>), lastPointAt: null },
    { vm: 'pg', peer: 'rpo-b', rpoSeconds: 30, lastPointAt: null },
  );
  // The first point was already older than the RPO when it was committed: the violation is real.
  // Read from the first cycle's job: by the time the alert arrives, later (small, fast) cycles may
  // have run, so the status's last cycle need not be the first one.
  const jobs = await a.cliJson<CycleJob[]>('job', 'list', '--kind', 'replication-cycle', '--target', target);
  const first = jobs.find((j) => j.state === 'succeeded' && j.result?.mode === 'full');
  assert.ok(first, JSON.stringify(jobs));
  assert.ok(first.result!.bytesSent >= 3 * 1024 * 1024, JSON.stringify(first));
  assert.ok(first.result!.durationMs > 30_000, `the first cycle took ${first.result!.durationMs} ms, within the RPO`);
  assert.match(firing.incident.remedy ?? '', /'mamori replicate sync-now pg'/);

  await a.waitFor('the RPO alert resolved', async () => rpo().length >= 2, 300_000);
  const resolved = rpo()[1]!;
  assert.equal(resolved.status, 'resolved');
  assert.equal(resolved.incident.id, firing.incident.id);
  assert.ok(resolved.incident.clearedAt !== null);
  assert.equal(rpo().length, 2, 'each transition posted once');

  // The site's own record agrees: cleared, with its remedy.
  const listed = (await a.cliJson<Incident[]>('events')).find((i) => i.id === firing.incident.id);
  assert.ok(
    listed && listed.clearedAt !== null && listed.kind === 'replication.rpo-violated' && listed.target === target,
    JSON.stringify(listed),
  );
  assert.match(listed.remedy ?? '', /mamori replicate status pg/);
  const alerts = await a.cliJson<{ deliveries: { failed: number; pending: number } }>('alerts', 'list');
  assert.equal(alerts.deliveries.failed, 0);
});

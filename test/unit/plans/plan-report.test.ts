import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderRunHtml, summarizeRun, summaryText } from '../../../src/plans/plan-report.js';
import { noCloudFiles } from '../../../src/guest/nocloud-drive.js';
import type { PlanRun } from '../../../src/plans/run-journal.js';

const RUN: PlanRun = {
  id: 'run-1',
  plan: 'shop',
  mode: 'disaster',
  state: 'done',
  peer: 'site-a',
  options: {},
  snapshot: null,
  arrays: {},
  steps: [
    {
      id: 's001',
      kind: 'shutdown',
      label: 'shut down db at site-a and sync it',
      state: 'skipped',
      message: 'warning: site-a did not answer',
    },
    {
      id: 's002',
      kind: 'recover',
      label: 'recover <db>',
      state: 'done',
      startedAt: '2026-11-27T10:00:01Z',
      endedAt: '2026-11-27T10:00:02Z',
    },
    { id: 's003', kind: 'recover', label: 'recover web', state: 'failed', message: 'no point' },
  ],
  vms: {
    web: { vm: 'web', priority: 2, error: 'no point' },
    db: {
      vm: 'db',
      priority: 1,
      point: { id: 'p1', time: '2026-11-27T09:59:00Z' },
      rtoSec: 12.5,
      ip: '10.0.0.5/24',
      dataLoss: {
        atLeastSec: 1.2,
        atMostSec: 4,
        atLeastFrom: { source: 'last-heartbeat', at: '2026-11-27T09:59:01.2Z' },
        atMostFrom: { source: 'peer-watch', at: '2026-11-27T09:59:04Z' },
      },
    },
    // Journalled before the bounds: one figure, which was a lower bound.
    old: {
      vm: 'old',
      priority: 3,
      point: { id: 'p0', time: '2026-11-27T09:58:00Z' },
      rtoSec: 9,
      dataLossSec: 30,
      dataLossNote: 'at least: writes between the point and then',
    },
  },
  result: 'errors',
  error: null,
  startedAt: '2026-11-27T10:00:00Z',
  endedAt: '2026-11-27T10:00:20Z',
  updatedAt: '2026-11-27T10:00:20Z',
};

test('the summary: slowest RTO, steps counted, VMs in priority order', () => {
  const s = summarizeRun(RUN);
  assert.equal(s.rtoSec, 12.5);
  assert.equal(s.durationSec, 20);
  assert.deepEqual(s.steps, { total: 3, done: 1, failed: 1, skipped: 1 });
  assert.deepEqual(
    s.vms.map((v) => v.vm),
    ['db', 'web', 'old'],
  );
  assert.deepEqual(
    [s.vms[0]!.dataLoss?.atLeastSec, s.vms[0]!.dataLoss?.atMostSec],
    [1.2, 4],
    'the JSON summary carries both bounds',
  );
  assert.deepEqual(
    [s.vms[2]!.dataLoss?.atLeastSec, s.vms[2]!.dataLoss?.atMostSec],
    [30, null],
    'an old run reads as at least',
  );
  assert.equal(s.vms[1]!.dataLoss, null);
  const text = summaryText(RUN);
  assert.match(text, /disaster of plan shop: errors in 20 s/);
  assert.match(
    text,
    /p1 db: point 2026-11-27T09:59:00Z, RTO 12.5 s, data loss between 1.2 s and 4.0 s, IP 10.0.0.5\/24/,
  );
  assert.match(text, /p3 old: point 2026-11-27T09:58:00Z, RTO 9 s, data loss at least 30.0 s \(no upper bound known\)/);
  assert.doesNotMatch(text, /data loss [\d.]+ s/, 'never a bare figure');
  assert.match(text, /p2 web: FAILED no point/);
});

test('the HTML report escapes what it shows and lists every step', () => {
  const html = renderRunHtml(RUN);
  assert.ok(html.includes('recover &lt;db&gt;'));
  assert.ok(!html.includes('<db>'));
  for (const id of ['s001', 's002', 's003']) assert.ok(html.includes(`<td>${id}</td>`));
  assert.ok(html.includes('<td>between 1.2 s and 4.0 s</td>'));
  assert.match(
    html,
    /<td>at least from the protected VM&#39;s last heartbeat seen \(2026-11-27T09:59:01.2Z\); at most from the peer watch finding the protected site gone/,
  );
  assert.ok(
    html.includes(
      '<td>at least 30.0 s (no upper bound known)</td><td>at least: writes between the point and then</td>',
    ),
  );
});

test('NoCloud seed: hostname, and each NIC matched by MAC with its address, gateway and DNS', () => {
  const f = noCloudFiles({
    instanceId: 'i-1',
    hostname: 'db',
    interfaces: [{ mac: '52:54:00:aa:bb:cc', address: '10.0.0.5/24', gateway: '10.0.0.1', dns: ['10.0.0.2'] }],
  });
  assert.equal(f['meta-data'], 'instance-id: i-1\nlocal-hostname: db\n');
  assert.match(f['user-data'], /^#cloud-config\n/);
  assert.equal(
    f['network-config'],
    [
      'version: 2',
      'ethernets:',
      '  nic0:',
      '    match:',
      '      macaddress: "52:54:00:aa:bb:cc"',
      '    set-name: nic0',
      '    addresses: [10.0.0.5/24]',
      '    gateway4: 10.0.0.1',
      '    nameservers:',
      '      addresses: [10.0.0.2]',
      '',
    ].join('\n'),
  );
});

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { TwoSites } from '../harness/two-sites.js';
import { repoRoot } from '../harness/repo-root.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import type { VmView } from '../../src/vms/vm-service.js';

/*
 * The web console end to end, in a real browser (Debian's chromium through playwright-core)
 * against two real sites: log in at site-b (a wrong token first), the replication lag chart
 * at site-a, a test recovery of a plan at site-b dry-run, run, its prompt answered from the
 * page, its steps followed live and its report opened, then the cleanup run, and an API
 * error shown with its code, and the Events page with a real incident open, then cleared.
 * Screenshots of the main pages: see SHOTS below.
 */
let sites: TwoSites;
let work: string;
let browser: Browser;
let context: BrowserContext;
let atB: Page;
let atA: Page;

/**
 * Screenshots go to .cache/screenshots (ignored), so `make test` leaves the checkout as it was;
 * MAMORI_UPDATE_SCREENSHOTS=1 writes them over docs/screenshots, for a deliberate update.
 */
const SHOTS =
  process.env['MAMORI_UPDATE_SCREENSHOTS'] === '1'
    ? join(repoRoot, 'docs', 'screenshots')
    : join(repoRoot, '.cache', 'screenshots');
const VMS = ['db', 'app'] as const;
const RUN_TIMEOUT_MS = 300_000;
/** The recovery site's page: its console messages and failed requests, printed when a wait fails. */
const debugLog: string[] = [];
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

const PLAN = `name: apps-plan
description: database first, then the application
protectionGroups: [apps]
vms:
  db:
    priority: 1
    waitHeartbeat: 240s
    testIp: { address: 192.168.78.10/24 }
  app:
    priority: 2
    dependsOn: [db]
    waitHeartbeat: 240s
    testIp: { address: 192.168.78.11/24 }
steps:
  - before: priority 2
    prompt: "check the database, then continue"
    modes: [test]
`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'mamori-console-'));
  sites = await TwoSites.create();
  await sites.pairBothWays();
  for (const vm of VMS) await a('vm', 'create', vm, '--test-guest', '--data-disk', '32M');
  for (const vm of VMS) await a('vm', 'start', vm);
  for (const vm of VMS)
    await sites.a.waitFor(`${vm} heartbeat`, async () => (await a<VmView>('vm', 'show', vm)).lastHeartbeatAt, 180_000);
  // db's RPO is short enough for its lag chart to show scheduled cycles against the RPO line;
  // app's is long, so only the first cycle and the plan's runs touch it.
  await a('replicate', 'enable', 'db', '--to', 'site-b', '--rpo', '1m');
  await a('replicate', 'enable', 'app', '--to', 'site-b', '--rpo', '1h');
  for (const vm of VMS)
    await sites.a.waitFor(
      `${vm} first point`,
      async () => (await a<ReplicationStatus>('replicate', 'status', vm)).lastPointAt,
      180_000,
    );
  // Two more points of db, so its lag chart has a saw-tooth to draw.
  for (let i = 0; i < 2; i++) await a('replicate', 'sync-now', 'db');
  await a('group', 'create', 'apps', '--vm', 'db', '--vm', 'app');
  await b('network', 'create', 'testnet', '--isolated');
  await b('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'testnet');
  await b('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
  await writeFile(join(work, 'plan.yaml'), PLAN);
  await b('plan', 'apply', join(work, 'plan.yaml'));

  // The sites live in network namespaces the root one cannot reach: the browser runs inside
  // site-a's, which reaches site-b over the link between them. Not site-b's: the test VMs'
  // taps come and go there, and Chromium aborts requests in flight on any change of its
  // network (ERR_NETWORK_CHANGED), the run page's event stream included.
  const wrapper = join(work, 'chromium-in-site-a');
  await writeFile(
    wrapper,
    `#!/bin/sh\nexec nsenter --net=/var/run/netns/${sites.namespaces[0]!.name} /usr/bin/chromium "$@"\n`,
  );
  await chmod(wrapper, 0o755);
  browser = await chromium.launch({
    executablePath: wrapper,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  // Each site has its own CA, which this browser does not trust.
  context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 860 },
    acceptDownloads: true,
  });
  atB = await context.newPage();
  atB.on('console', (m) => debugLog.push(`console ${m.type()}: ${m.text()}`));
  atB.on('requestfailed', (r) => debugLog.push(`failed ${r.method()} ${r.url()} ${r.failure()?.errorText}`));

  atA = await context.newPage();
  await mkdir(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await sites?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

async function login(page: Page, token: string): Promise<void> {
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
}

/** Starting a run moves the page to #/runs/RUN (a hash change, not a load). */
async function runPageOpened(): Promise<void> {
  await atB.waitForFunction(() => location.hash.startsWith('#/runs/run-'));
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

test('login at the recovery site: a wrong token shows the login again with the API error', async () => {
  await atB.goto(`${sites.b.url}/`);
  assert.match(atB.url(), /\/ui\/$/);
  await login(atB, 'not-a-token');
  const error = await atB.waitForSelector('.login .error[data-code=UNAUTHORIZED]');
  assert.match(await error.innerText(), /not valid for this site/);
  assert.ok(await atB.isVisible('input[name=token]'), 'still at the login');
  await login(atB, await sites.b.adminToken());
  await atB.waitForSelector('header .site-name:has-text("site-b")');
  const peer = await atB.waitForSelector('table.sites tr[data-site="site-a"] .badge.ok');
  assert.equal(await peer.innerText(), 'reachable');
  await shot(atB, 'sites');
});

test('the protected site shows the lag over time with the RPO line, and its VMs', async () => {
  await atA.goto(`${sites.a.url}/ui/#/replication/db`);
  await login(atA, await sites.a.adminToken());
  await atA.waitForSelector('table.replication tr[data-vm=db]');
  await atA.waitForSelector('svg.lag-chart path.lag-line');
  // A horizontal line has an empty box, which playwright calls hidden: present is what counts.
  assert.ok(await atA.$('svg.lag-chart line.rpo-line'));
  assert.match((await atA.textContent('svg.lag-chart .rpo-label')) ?? '', /RPO 60 s/);
  // One dot per committed point: the first cycle and the two sync-nows at least.
  assert.ok((await atA.$$('svg.lag-chart circle.commit')).length >= 3);

  await atA.goto(`${sites.a.url}/ui/#/vms/db`);
  await atA.waitForSelector('table.vms tr[data-vm=db] .state-running');
  await atA.waitForFunction(() => (document.querySelector('.console-log')?.textContent ?? '').length > 0);
  await shot(atA, 'vms');
  // An API error shows the API's message and code: db runs already.
  await atA.click('.vm-detail button:has-text("Start")');
  const error = await atA.waitForSelector('.vm-detail .error[data-code=VM_INVALID_STATE]');
  assert.match(await error.innerText(), /VM db is already running/);
});

test('test recovery from the page: dry run, run, prompt answered, steps followed live, report', async () => {
  await atB.goto(`${sites.b.url}/ui/#/plans/apps-plan`);
  await atB.waitForSelector('.plan-graph .vm-box[data-vm=db]');
  await atB.waitForSelector('.plan-graph path.dependency[data-from=db][data-to=app]', { state: 'attached' });
  await atB.click('button.dry-run');
  await atB.waitForSelector('.dry-run-result li:has-text("recover db into the test network")');
  await shot(atB, 'plan');

  await atB.click('button.run');
  await runPageOpened();
  const runId = /#\/runs\/(run-[a-z0-9]+)/.exec(atB.url())![1]!;
  // The page never polls: the prompt appears because the journal's write reached it as an event.
  const prompt = await atB.waitForSelector('.prompt .prompt-message', { timeout: RUN_TIMEOUT_MS });
  assert.equal(await prompt.innerText(), 'check the database, then continue');
  assert.equal(await atB.getAttribute('li.step:has-text("recover app")', 'data-state'), 'pending');
  await atB.click('.prompt button.continue');
  await atB.waitForSelector('section.run-page[data-state=done]', { timeout: RUN_TIMEOUT_MS });
  const states = await atB.$$eval('li.step', (els) =>
    els.map((e) => `${e.getAttribute('data-state')} ${e.textContent}`),
  );
  assert.ok(
    states.every((s) => s.startsWith('done')),
    states.join('\n'),
  );
  assert.equal(await atB.innerText('.run-state .badge'), 'success');
  for (const vm of VMS) assert.match(await atB.innerText(`.report-vms tr[data-vm=${vm}]`), /ok$/);
  assert.match(await atB.innerText('.report .rto'), /\d/);
  await shot(atB, 'run');

  const [download] = await Promise.all([atB.waitForEvent('download'), atB.click('button.download-html')]);
  assert.equal(download.suggestedFilename(), `mamori-${runId}.html`);
  const html = await readFile((await download.path())!, 'utf8');
  assert.match(html, /<h1>Plan apps-plan: test run/);
});

test('cleanup from the page leaves nothing; the history lists both runs', async () => {
  await atB.goto(`${sites.b.url}/ui/#/plans/apps-plan`);
  await atB.selectOption('select[aria-label="run mode"]', 'cleanup');
  await atB.click('button.run');
  await runPageOpened();
  await atB
    .waitForSelector('section.run-page[data-state=done]', { timeout: RUN_TIMEOUT_MS })
    .catch(async (e: unknown) => {
      process.stderr.write(
        `page ${await atB.evaluate(() => location.hash)}:\n${(await atB.content()).slice(0, 4000)}\n${debugLog.join('\n')}\n`,
      );
      throw e;
    });
  assert.equal(await atB.innerText('.run-state .badge'), 'success');
  assert.deepEqual(await b<VmView[]>('vm', 'list'), []);

  await atB.goto(`${sites.b.url}/ui/#/history`);
  await atB.waitForFunction(() => document.querySelectorAll('table.runs tbody tr').length === 2);
  await shot(atB, 'history');
  // After the runs db's lag has climbed on its chart; a point's write log checks out.
  await atA.goto(`${sites.a.url}/ui/#/replication/db`);
  await atA.waitForSelector('svg.lag-chart path.lag-line');
  await atA.click('table.points tbody tr:first-child button:has-text("Verify")');
  assert.match(
    await (await atA.waitForSelector('.verify-report', { timeout: 120_000 })).innerText(),
    /gap-free up to \d+/,
  );
  await shot(atA, 'replication');
  // The replication cycles and VM jobs are site-a's; its tab holds site-a's session.
  await atA.goto(`${sites.a.url}/ui/#/jobs`);
  await atA.waitForSelector('table.jobs');
  await shot(atA, 'jobs');
  // site-b's audit log: the wrong token tried at login and the runs started from the page; its chain is intact.
  await atB.goto(`${sites.b.url}/ui/#/audit`);
  await atB.waitForSelector('table.audit tbody tr');
  const audit = await atB.innerText('table.audit');
  assert.match(audit, /GET \/vms\s+\S+\s+401\s+UNAUTHORIZED/);
  assert.match(audit, /POST \/plans\/:name\/runs\s+name=apps-plan/);
  await atB.click('button:has-text("Verify chain")');
  await atB.waitForSelector('[data-audit-verify=ok]');
  await shot(atB, 'audit');
});

interface Incident {
  id: string;
  kind: string;
  target: string;
  clearedAt: string | null;
  remedy: string | null;
}

test('the Events page lists an incident open with its remedy, counts it in the navigation bar, and shows it cleared', async () => {
  // A real incident: with the link between the sites silent, a cycle of db fails within its
  // timeouts. ('blackhole', not 'down': a link going down changes the browser's network, and
  // Chromium aborts what it has in flight.)
  await sites.cutLink('blackhole');
  try {
    await sites.cli('a', 'replicate', 'sync-now', 'db');
    await sites.a.waitFor(
      'the failed-cycle incident',
      async () => (await a<Incident[]>('events', '--open')).some((i) => i.kind === 'replication.cycle-failed'),
      300_000,
    );
    await atA.goto(`${sites.a.url}/ui/#/events`);
    const row = await atA.waitForSelector('table.events tr[data-kind="replication.cycle-failed"][data-state=open]');
    assert.match(await row.innerText(), /db/);
    assert.match(await row.innerText(), /mamori replicate sync-now db/, 'the remedy names the command');
    // The count beside Events is the number of incidents open, the API's own count. With the link
    // cut, more incidents may open while the page refreshes (every 10 s): the API is read again
    // until the badge and the table agree with it at one moment.
    const badge = await atA.waitForSelector('header nav a[href="#/events"] .nav-count');
    let open: Incident[] = [];
    await sites.a.waitFor(
      'the badge and the table to show the open incidents the API lists',
      async () => {
        open = await a<Incident[]>('events', '--open');
        const shown = await badge.textContent();
        const rows = await atA.$$eval('table.events tr[data-state=open]', (r) => r.length);
        return shown === String(open.length) && rows === open.length;
      },
      120_000,
    );
    assert.equal(await badge.getAttribute('data-open-incidents'), String(open.length));
    await shot(atA, 'events');
  } finally {
    await sites.restoreLink();
  }
  // The next cycle succeeds and clears it (a retry may beat this one to it); the page,
  // refreshed every 5 s, shows it cleared.
  await sites.cli('a', 'replicate', 'sync-now', 'db');
  await atA.waitForSelector('table.events tr[data-kind="replication.cycle-failed"][data-state=cleared]', {
    timeout: 60_000,
  });
  assert.equal(await atA.$('table.events tr[data-kind="replication.cycle-failed"][data-state=open]'), null);
});

test('destructive actions need the name typed; the whole name confirms and the action happens', async () => {
  const runsBefore = (await b<unknown[]>('plan', 'history', 'apps-plan')).length;
  await atB.goto(`${sites.b.url}/ui/#/plans/apps-plan`);
  await atB.selectOption('select[aria-label="run mode"]', 'disaster');
  await atB.click('button.run');
  await atB.fill('.confirm-input', 'apps');
  assert.ok(await atB.isDisabled('.confirm-go'), 'a partial name does not confirm');
  await atB.fill('.confirm-input', 'apps-plan');
  assert.ok(await atB.isEnabled('.confirm-go'), 'the whole name confirms');
  // Not clicked: a disaster run here would end the plan the other tests use.
  await atB.click('.confirm button:has-text("Cancel")');
  assert.equal(await atB.$('.confirm'), null);
  assert.equal((await b<unknown[]>('plan', 'history', 'apps-plan')).length, runsBefore, 'cancel started no run');

  // The positive half, carried out: a VM made for this is deleted from its page.
  await b('vm', 'create', 'scratch', '--test-guest', '--data-disk', '16M');
  await atB.goto(`${sites.b.url}/ui/#/vms/scratch`);
  // The list refreshes every 5 s; a loaded CI machine may take a few rounds to show it.
  await atB.waitForSelector('.vm-detail h3:text-is("scratch")', { timeout: 120_000 });
  await atB.click('.vm-detail button:has-text("Delete…")');
  await atB.fill('.confirm-input', 'scratc');
  assert.ok(await atB.isDisabled('.confirm-go'), 'a partial name does not confirm');
  assert.ok(
    (await b<VmView[]>('vm', 'list')).some((v) => v.name === 'scratch'),
    'nothing happened yet',
  );
  await atB.fill('.confirm-input', 'scratch');
  assert.ok(await atB.isEnabled('.confirm-go'), 'the whole name confirms');
  await atB.click('.confirm-go');
  await atB.waitForSelector('.confirm', { state: 'detached' });
  await sites.b.waitFor(
    'the VM deleted from the page',
    async () => !(await b<VmView[]>('vm', 'list')).some((v) => v.name === 'scratch') || undefined,
    30_000,
  );
});

test('a viewer sees what it may read and none of the actions its role may not take', async () => {
  const made = await a<{ token: string }>('token', 'create', '--role', 'viewer', '--name', 'looker');
  // A new tab: the console keeps its session per tab.
  const asViewer = await context.newPage();
  try {
    await asViewer.goto(`${sites.a.url}/ui/#/vms/db`);
    await login(asViewer, made.token);
    await asViewer.waitForSelector('.shell[data-role=viewer] .vm-detail pre.console-log');
    assert.match(await asViewer.innerText('header .role'), /looker \(viewer\)/);
    const nav = await asViewer.innerText('header nav');
    assert.match(nav, /VMs/);
    assert.doesNotMatch(nav, /Audit/, 'the audit log is an admin page');
    for (const label of ['Start', 'Stop', 'Migrate…', 'Delete…'])
      assert.equal(await asViewer.$(`.vm-detail button:has-text("${label}")`), null, `no ${label} for a viewer`);
    await asViewer.goto(`${sites.a.url}/ui/#/replication/db`);
    await asViewer.waitForSelector('svg.lag-chart');
    assert.equal(await asViewer.$('button:has-text("Sync now")'), null);
    // The same page as an admin has them: the check above is not vacuous.
    await atA.goto(`${sites.a.url}/ui/#/vms/db`);
    await atA.waitForSelector('.vm-detail button:has-text("Start")');
    await shot(asViewer, 'viewer');
  } finally {
    await asViewer.close();
  }
});

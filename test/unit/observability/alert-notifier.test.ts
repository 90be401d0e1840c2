import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openSqliteStore, type SqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { IncidentLog } from '../../../src/events/incident-log.js';
import { AlertNotifier } from '../../../src/events/alert-notifier.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { SecretBox } from '../../../src/core/secret-box.js';
import { WebhookReceiver, waitUntil } from '../../harness/webhook-receiver.js';

const log = pino({ level: 'silent' });
/** The site's at-rest key: one for the whole test, so a reopened database opens what it sealed. */
const box = new SecretBox(randomBytes(32));
let dir: string;
let receiver: WebhookReceiver;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-alerts-'));
  receiver = await WebhookReceiver.start();
});
after(async () => {
  await receiver.close();
  await rm(dir, { recursive: true, force: true });
});

/** A site's store, incident log and notifier over one database file (a second open is a restarted server). */
async function open(
  file: string,
): Promise<{ store: SqliteStore; incidents: IncidentLog; notifier: AlertNotifier; close(): Promise<void> }> {
  const store = await openSqliteStore(join(dir, file));
  const incidents = new IncidentLog(store.handle);
  const notifier = new AlertNotifier({
    db: store.handle,
    box,
    incidents,
    siteName: 'site-a',
    log,
    retryBaseMs: 20,
    retryMaxMs: 200,
    // Generous: a post that times out on a loaded machine would count as one more attempt, and the
    // test counts attempts. No test here waits for a timeout: the receiver always answers.
    timeoutMs: 15_000,
    pollMs: 1_000,
  });
  notifier.start();
  return {
    store,
    incidents,
    notifier,
    async close() {
      await notifier.stop();
      await store.close();
    },
  };
}

const raise = (incidents: IncidentLog, kind: string, target: string) =>
  incidents.raise({ kind, target, severity: 'warning', message: `${kind} on ${target}`, details: { n: 1 } });

test('the webhook URL is validated, with an error that says what is wrong', async () => {
  const site = await open('validate.db');
  try {
    for (const bad of ['', 'not a url', 'ftp://host/x', 'file:///etc/passwd', `http://h/${'x'.repeat(2100)}`, 42]) {
      await assert.rejects(
        site.notifier.setWebhook(bad),
        (e: unknown) => isMamoriError(e, 'ALERT_WEBHOOK_INVALID') && /alert webhook URL/.test((e as Error).message),
        String(bad),
      );
    }
    assert.equal(await site.notifier.webhook(), null);
    await assert.rejects(site.notifier.test(), (e: unknown) => isMamoriError(e, 'ALERT_WEBHOOK_NOT_SET'));
    const set = await site.notifier.setWebhook('https://alerts.example.com/mamori?team=dr');
    // Query values may be credentials: shown masked, keys kept.
    assert.equal(set.url, 'https://alerts.example.com/mamori?team=***');
    assert.equal((await site.notifier.webhook())?.url, 'https://alerts.example.com/mamori?team=***');
    // A refused URL's password is not echoed in the error either.
    await assert.rejects(
      site.notifier.setWebhook('gopher://u:hunter2@h/x'),
      (e: unknown) => isMamoriError(e, 'ALERT_WEBHOOK_INVALID') && !(e as Error).message.includes('hunter2'),
    );
    const withPassword = await site.notifier.setWebhook(
      'https://ops:hunter2@alerts.example.com/hook?token=abc123&team=dr#frag',
    );
    assert.equal(withPassword.url, 'https://***@alerts.example.com/hook?token=***&team=***');
    const bytes = Buffer.concat(
      await Promise.all(['', '-wal'].map((x) => readFile(join(dir, `validate.db${x}`)).catch(() => Buffer.alloc(0)))),
    );
    assert.equal(bytes.indexOf('hunter2'), -1, 'the webhook password is sealed in the database');
    assert.equal(await site.notifier.clearWebhook(), true);
    assert.equal(await site.notifier.clearWebhook(), false);
  } finally {
    await site.close();
  }
});

test('each transition is posted once, firing before resolved; history before the webhook is not', async () => {
  receiver.received.length = 0;
  const site = await open('once.db');
  try {
    await raise(site.incidents, 'old', 'vm:1');
    await site.incidents.clear('old', 'vm:1');
    await raise(site.incidents, 'still-open', 'vm:2');
    await site.notifier.setWebhook(receiver.url);
    await waitUntil('the open incident announced', () => receiver.of('still-open').length === 1);
    const { incident } = await raise(site.incidents, 'site.peer-unreachable', 'site:b');
    await raise(site.incidents, 'site.peer-unreachable', 'site:b'); // still open: nothing new
    await site.incidents.clear('site.peer-unreachable', 'site:b');
    await waitUntil('resolved', () => receiver.of('site.peer-unreachable').length === 2);
    const got = receiver.of('site.peer-unreachable');
    assert.deepEqual(
      got.map((a) => a.status),
      ['firing', 'resolved'],
    );
    assert.equal(got[0]!.site, 'site-a');
    assert.deepEqual({ ...got[0]!.incident }, { ...incident, clearedAt: null });
    assert.equal(got[1]!.incident.id, incident.id);
    assert.ok(got[1]!.incident.clearedAt !== null);
    assert.deepEqual(receiver.of('old'), [], 'what ended before the webhook was set is not news');
    // The receiver has the post before its answer reaches the notifier, which only then records it.
    const status = await waitUntil('the deliveries recorded', async () => {
      const s = await site.notifier.deliveries();
      return s.pending === 0 && s;
    });
    assert.equal(status.delivered, 3);
    assert.equal(status.lastError, null);
  } finally {
    await site.close();
  }
});

test('a failing receiver is retried with backoff; a refusal (4xx) is not; a restart neither loses nor repeats', async () => {
  receiver.received.length = 0;
  const site = await open('retry.db');
  await site.notifier.setWebhook(receiver.url);
  let refused = 0;
  receiver.answer = (b) =>
    b.incident.kind === 'flaky' && refused++ < 2
      ? 503
      : b.incident.kind === 'refused' && b.status === 'firing'
        ? 400
        : 204;
  try {
    await raise(site.incidents, 'flaky', 'vm:1');
    await waitUntil('delivered after two 503s', () => receiver.of('flaky').length === 1);
    await raise(site.incidents, 'refused', 'vm:1');
    await waitUntil('refused for good', async () => (await site.notifier.deliveries()).failed === 1);
    await site.incidents.clear('refused', 'vm:1');
    await waitUntil('its resolved still goes', () => receiver.of('refused', 'vm:1').length === 1);
    const s = await site.notifier.deliveries();
    assert.equal(s.recent.find((d) => d.kind === 'flaky')?.attempts, 3);
    assert.match(s.recent.find((d) => d.kind === 'refused' && d.status === 'firing')?.lastError ?? '', /HTTP 400/);
  } finally {
    receiver.answer = () => 204;
    await site.close();
  }

  // Down: the receiver is unreachable, then the server stops with the firing still owed.
  const down = await open('retry.db');
  receiver.answer = () => 503;
  await down.incidents.clear('flaky', 'vm:1');
  await waitUntil(
    'a failed try recorded',
    async () =>
      ((await down.notifier.deliveries()).recent.find((d) => d.kind === 'flaky' && d.status === 'resolved')?.attempts ??
        0) >= 1,
  );
  await down.close();
  receiver.answer = () => 204;
  const back = await open('retry.db');
  try {
    await waitUntil('the owed resolved delivered after the restart', () => receiver.of('flaky').length === 2);
    await raise(back.incidents, 'after-restart', 'vm:3');
    await waitUntil('a new incident goes too', () => receiver.of('after-restart').length === 1);
    // Everything owed went out once: one of each transition, none repeated by the restart.
    assert.deepEqual(
      receiver.of('flaky').map((a) => a.status),
      ['firing', 'resolved'],
    );
    assert.deepEqual(receiver.received.map((a) => `${a.incident.kind}:${a.status}`).sort(), [
      'after-restart:firing',
      'flaky:firing',
      'flaky:resolved',
      'refused:resolved',
    ]);
    await waitUntil('nothing owed', async () => (await back.notifier.deliveries()).pending === 0);
  } finally {
    await back.close();
  }
});

test("a test alert reports the receiver's failure", async () => {
  const site = await open('test.db');
  try {
    await site.notifier.setWebhook(receiver.url);
    assert.deepEqual(await site.notifier.test(), { url: new URL(receiver.url).href, delivered: true });
    receiver.answer = () => 500;
    await assert.rejects(
      site.notifier.test(),
      (e: unknown) => isMamoriError(e, 'ALERT_WEBHOOK_FAILED') && /HTTP 500/.test((e as Error).message),
    );
    await site.notifier.setWebhook('http://127.0.0.1:1/nothing-listens');
    await assert.rejects(
      site.notifier.test(),
      (e: unknown) => isMamoriError(e, 'ALERT_WEBHOOK_FAILED') && /ECONNREFUSED/.test((e as Error).message),
    );
  } finally {
    receiver.answer = () => 204;
    await site.close();
  }
});

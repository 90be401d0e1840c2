import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { registerAuditHooks, CLIENT_CLOSED } from '../../../src/api/audit-hooks.js';
import { AuditLog, type AuditRecord } from '../../../src/audit/audit-log.js';
import { AuditRepo } from '../../../src/store/repos/audit-repo.js';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';

/** A bare app with only the audit hooks, and the log lines it wrote. */
function appWith(audit: AuditLog): { app: FastifyInstance; logs: string[] } {
  const logs: string[] = [];
  const app = Fastify({
    logger: { level: 'error', stream: { write: (line: string) => void logs.push(line) } },
  }) as unknown as FastifyInstance;
  app.decorateRequest('caller', null);
  registerAuditHooks(app, { audit });
  return { app, logs };
}

test('a failing audit write is logged and never changes the answer', async () => {
  const failing = { append: async (_r: AuditRecord) => Promise.reject(new Error('disk full')) } as unknown as AuditLog;
  const { app, logs } = appWith(failing);
  app.post('/vms/:name/start', async () => ({ started: true }));
  const res = await app.inject({ method: 'POST', url: '/vms/web1/start' });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json(), { started: true });
  await app.close();
  assert.ok(
    logs.some((l) => l.includes('could not write the audit log entry') && l.includes('disk full')),
    logs.join('\n'),
  );
});

test('a client that goes away before the answer is recorded once, with 499', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-audit-hooks-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const audit = new AuditLog(new AuditRepo(store.handle));
    const { app, logs } = appWith(audit);
    let arrived!: () => void;
    const requestArrived = new Promise<void>((r) => (arrived = r));
    let finish!: () => void;
    const handlerMayFinish = new Promise<void>((r) => (finish = r));
    let handlerDone!: () => void;
    const handlerFinished = new Promise<void>((r) => (handlerDone = r));
    app.post('/vms/:name/migrate', async () => {
      arrived();
      await handlerMayFinish;
      handlerDone();
      return { migrated: true };
    });
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const req = request(`${address}/vms/web1/migrate`, { method: 'POST', headers: { 'content-length': '0' } });
    req.on('error', () => undefined);
    req.end();
    await requestArrived;
    req.destroy();
    // The close reaches the server on its own schedule: wait for the entry, then let the handler end.
    const deadline = Date.now() + 10_000;
    while ((await audit.list({ limit: 10 })).length === 0) {
      assert.ok(Date.now() < deadline, `no entry for the closed request; log: ${logs.join('')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    finish();
    await handlerFinished;
    await app.close();
    const entries = await audit.list({ limit: 10 });
    assert.deepEqual(
      entries.map((e) => [e.method, e.route, e.status, e.target, e.source]),
      [['POST', '/vms/:name/migrate', CLIENT_CLOSED, { name: 'web1' }, '127.0.0.1']],
    );
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('what an unknown route was called with is cut to a sane length', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-audit-hooks-'));
  const store = await openSqliteStore(join(dir, 'site.db'));
  try {
    const audit = new AuditLog(new AuditRepo(store.handle));
    const { app } = appWith(audit);
    const res = await app.inject({ method: 'DELETE', url: `/vms/${'x'.repeat(5000)}?q=1` });
    assert.equal(res.statusCode, 404);
    await app.close();
    const [e] = await audit.list({ limit: 1 });
    assert.equal(e!.route, '(no route)');
    assert.equal(e!.target!['path']!.length, 201);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

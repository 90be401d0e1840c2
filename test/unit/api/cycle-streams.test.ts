import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { pino } from 'pino';
import { TokenRepo } from '../../../src/store/repos/token-repo.js';
import { ReplicaRepo } from '../../../src/store/repos/replica-repo.js';
import { ReplicaService } from '../../../src/replication/replica-service.js';
import { CYCLE_STREAM_PROTOCOL } from '../../../src/replication/replica-cycle-server.js';
import { installCycleStreams } from '../../../src/api/cycle-streams.js';
import { ensureSiteTls } from '../../../src/sites/site-tls.js';
import { httpsJson } from '../../../src/core/https-json-client.js';
import { loadSecretKey } from '../../../src/core/secret-box.js';
import { describeEachDialect } from '../../harness/store-dialects.js';

/*
 * The upgrade that carries a cycle's NBD stream bypasses Fastify's hooks, so it checks its
 * caller itself: these are the refusals, on a real HTTPS server with a real token table and
 * replica service. (The data path behind a granted upgrade is proven by the two-site
 * replication tests; the NBD option guard by its own test.)
 */
describeEachDialect('a cycle stream is refused to anyone but the open cycle of the replica owner', (f) => {
  test('no token, wrong roles, another site, no open cycle, a wrong path or protocol: refused, typed', async () => {
    const store = await f.open();
    const dir = await mkdtemp(join(tmpdir(), 'mamori-cycle-streams-'));
    const tls = await ensureSiteTls({ dir: join(dir, 'tls'), siteName: 'site-b' });
    const app = Fastify({ https: { key: tls.serverKeyPem, cert: tls.serverCertPem } });
    try {
      const tokens = new TokenRepo(store.handle, (await loadSecretKey(join(dir, 'secret.key'), true)).box);
      const replicas = new ReplicaService({ db: store.handle, dataDir: dir, log: pino({ level: 'silent' }) });
      await new ReplicaRepo(store.handle).insert({
        id: 'r1',
        sourceSite: 'site-a',
        sourceVmId: 'vm1',
        vmName: 'one',
        disks: [],
        keepPoints: 2,
        createdAt: '2026-01-01T00:00:00.000Z',
      });
      installCycleStreams(app, { tokens, replicas });
      await app.listen({ host: '127.0.0.1', port: 0 });
      const base = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      const ask = async (path: string, token?: string, protocol = CYCLE_STREAM_PROTOCOL) => {
        const res = await httpsJson({
          url: new URL(path, base),
          method: 'GET',
          trust: { ca: tls.caCertPem },
          timeoutMs: 10_000,
          upgrade: protocol,
          ...(token === undefined ? {} : { token }),
        });
        res.socket?.destroy();
        return { status: res.status, code: (res.json as { error?: { code?: string } } | undefined)?.error?.code };
      };
      const path = '/replicas/r1/cycles/cyc1/disks/0/stream';
      assert.deepEqual(await ask(path), { status: 401, code: 'UNAUTHORIZED' });
      assert.deepEqual(await ask(path, 'not-a-token'), { status: 401, code: 'UNAUTHORIZED' });
      for (const role of ['viewer', 'operator', 'admin'] as const)
        assert.deepEqual(await ask(path, await tokens.create(`a-${role}`, role)), { status: 403, code: 'FORBIDDEN' });
      const other = await tokens.create('site:site-x', 'site');
      assert.deepEqual(await ask(path, other), { status: 404, code: 'NOT_FOUND' }, "another site's replica");
      const owner = await tokens.create('site:site-a', 'site');
      assert.deepEqual(await ask(path, owner), { status: 409, code: 'VM_INVALID_STATE' }, 'no cycle is open');
      assert.deepEqual(await ask('/replicas/r1/cycles/cyc1/disks/0/other', owner), { status: 404, code: 'NOT_FOUND' });
      assert.deepEqual(await ask('/replicas/../etc/disks/0/stream', owner), { status: 404, code: 'NOT_FOUND' });
      assert.deepEqual(await ask(path, owner, 'websocket'), { status: 400, code: 'INVALID_INPUT' });
    } finally {
      await app.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

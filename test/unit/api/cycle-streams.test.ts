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
import { JOURNAL_STREAM_PROTOCOL } from '../../../src/api/journal-streams.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { shipJournal } from '../../../src/cdp/journal-shipping.js';
import { CompressedStream } from '../../../src/sites/compressed-stream.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { ensureSiteTls } from '../../../src/sites/site-tls.js';
import { httpsJson } from '../../../src/core/https-json-client.js';
import { loadSecretKey } from '../../../src/core/secret-box.js';
import { describeEachDialect, type StoreFixture } from '../../harness/store-dialects.js';

/** Asks `base` to upgrade `path` to `protocol`, as a source site's client does. */
function upgrader(base: string, ca: string) {
  const open = (path: string, protocol: string, token?: string) =>
    httpsJson({
      url: new URL(path, base),
      method: 'GET',
      trust: { ca },
      timeoutMs: 10_000,
      upgrade: protocol,
      ...(token === undefined ? {} : { token }),
    });
  /** The refusal's status and error code (a granted upgrade's socket is closed at once). */
  const ask = async (path: string, protocol: string, token?: string) => {
    const res = await open(path, protocol, token);
    res.socket?.destroy();
    return { status: res.status, code: (res.json as { error?: { code?: string } } | undefined)?.error?.code };
  };
  return { open, ask };
}

/**
 * A recovery site's stream endpoint on a real HTTPS server: its token table, its replica
 * service, and replica r1 of site-a's VM with `disks`. close() takes all of it down.
 */
async function recoverySite(f: StoreFixture, disks: { index: number; sizeBytes: number }[]) {
  const store = await f.open();
  const dir = await mkdtemp(join(tmpdir(), 'mamori-site-streams-'));
  const tls = await ensureSiteTls({ dir: join(dir, 'tls'), siteName: 'site-b' });
  const app = Fastify({ https: { key: tls.serverKeyPem, cert: tls.serverCertPem } });
  const replicas = new ReplicaService({ db: store.handle, dataDir: dir, log: pino({ level: 'silent' }) });
  const close = async (): Promise<void> => {
    await replicas.shutdown();
    await app.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const tokens = new TokenRepo(store.handle, (await loadSecretKey(join(dir, 'secret.key'), true)).box);
    const repo = new ReplicaRepo(store.handle);
    await repo.insert({
      id: 'r1',
      sourceSite: 'site-a',
      sourceVmId: 'vm1',
      vmName: 'one',
      disks,
      keepPoints: 2,
      createdAt: '2026-01-01T00:00:00.000Z',
    });
    installCycleStreams(app, { tokens, replicas });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const up = upgrader(`https://127.0.0.1:${(app.server.address() as AddressInfo).port}`, tls.caCertPem);
    return { dir, tokens, repo, replicas, up, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/*
 * The upgrade that carries a cycle's NBD stream bypasses Fastify's hooks, so it checks its
 * caller itself: these are the refusals, on a real HTTPS server with a real token table and
 * replica service. (The data path behind a granted upgrade is proven by the two-site
 * replication tests; the NBD option guard by its own test.)
 */
describeEachDialect('site streams (cycles, journals) are refused to anyone but the replica owner', (f) => {
  test('no token, wrong roles, another site, no open cycle, a wrong path or protocol: refused, typed', async () => {
    const { tokens, up, close } = await recoverySite(f, []);
    try {
      const ask = (path: string, token?: string, protocol = CYCLE_STREAM_PROTOCOL) => up.ask(path, protocol, token);
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
      await close();
    }
  });
  test('a journal stream: refused as a cycle stream is; granted, it carries the journal and resumes where it ends', async () => {
    const { dir, tokens, repo, replicas, up, close } = await recoverySite(f, [{ index: 0, sizeBytes: 1 << 20 }]);
    const source = await WriteJournal.open(join(dir, 'source-journal'));
    try {
      const open = (path: string, token?: string) => up.open(path, JOURNAL_STREAM_PROTOCOL, token);
      const ask = (path: string, token?: string, protocol = JOURNAL_STREAM_PROTOCOL) => up.ask(path, protocol, token);
      const path = '/replicas/r1/journal/disks/0/stream';
      assert.deepEqual(await ask(path), { status: 401, code: 'UNAUTHORIZED' });
      for (const role of ['viewer', 'operator', 'admin'] as const)
        assert.deepEqual(await ask(path, await tokens.create(`j-${role}`, role)), { status: 403, code: 'FORBIDDEN' });
      const other = await tokens.create('site:site-x', 'site');
      assert.deepEqual(await ask(path, other), { status: 404, code: 'NOT_FOUND' }, "another site's replica");
      const owner = await tokens.create('site:site-a', 'site');
      assert.deepEqual(await ask(path, owner), { status: 409, code: 'VM_INVALID_STATE' }, 'no journal begun');
      assert.deepEqual(await ask(path, owner, CYCLE_STREAM_PROTOCOL), { status: 400, code: 'INVALID_INPUT' });
      await assert.rejects(replicas.beginJournal('r1', 'site-a', 'p1'), (e) => isMamoriError(e, 'NOT_FOUND'));
      await assert.rejects(replicas.beginJournal('r1', 'site-x', 'p1'), (e) => isMamoriError(e, 'NOT_FOUND'));
      await repo.addPoint('r1', {
        pointId: 'p1',
        time: '2026-01-01T00:00:00.000Z',
        consistency: 'crash',
        committedAt: '2026-01-01T00:00:00.000Z',
        diskPoints: ['dp1'],
      });
      await replicas.beginJournal('r1', 'site-a', 'p1');

      // Granted: the source ships its journal through the upgraded connection, framed as the product frames it.
      for (let i = 0; i < 30; i++) await source.appendWrite(i * 4096, Buffer.alloc(4096, i + 1));
      await source.appendCheckpoint();
      const ship = async (): Promise<{ acked: () => number; done: Promise<void>; cut: () => void }> => {
        const res = await open(path, owner);
        assert.equal(res.status, 101);
        const wire = new CompressedStream(res.socket!, { mode: 'auto' });
        let last = 0;
        const done = shipJournal(source, wire, { onAck: (s) => (last = s) });
        return { acked: () => last, done, cut: () => res.socket!.destroy() };
      };
      const first = await ship();
      while (first.acked() !== source.durableSeq) await new Promise((r) => setTimeout(r, 10));
      assert.equal((await replicas.checkpoints('r1', {})).length, 1);
      first.cut();
      await first.done;
      // A cut, more writes, a new stream: it resumes where the recovery site's journal ends.
      for (let i = 0; i < 5; i++) await source.appendWrite(0, Buffer.alloc(4096, 0x80 + i));
      await source.appendCheckpoint();
      const second = await ship();
      while (second.acked() !== source.durableSeq) await new Promise((r) => setTimeout(r, 10));
      const listed = await replicas.checkpoints('r1', {});
      assert.deepEqual(
        listed.map((c) => c.seq),
        [31, 37],
      );
      second.cut();
      await second.done;
    } finally {
      await source.close();
      await close();
    }
  });
});

import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isMamoriError, MamoriError } from '../../../src/core/mamori-error.js';
import { QmpClient, type QmpCloseInfo } from '../../../src/qemu/qmp-client.js';
import type { QmpEvent } from '../../../src/qemu/qmp-types.js';

// ---- a small fake QMP server: it answers only the commands it is given, CommandNotFound otherwise ----

type Reply = { return: unknown } | { error: { class: string; desc: string } } | 'hang';
type Handler = (args: Record<string, unknown> | undefined, conn: FakeConnection, id: unknown) => Reply | Promise<Reply>;

interface FakeConnection {
  socket: Socket;
  /** Writes raw bytes (tests split messages across writes with it). */
  raw(text: string): void;
  send(msg: unknown): void;
  event(name: string, data?: Record<string, unknown>): void;
}

class FakeQmpServer {
  readonly path: string;
  readonly received: { execute: string; id: unknown }[] = [];
  readonly unknown: string[] = [];
  handlers: Record<string, Handler>;
  connections: FakeConnection[] = [];
  #server: Server | null = null;

  constructor(path: string, handlers: Record<string, Handler> = {}) {
    this.path = path;
    this.handlers = handlers;
  }

  async start(options: { greet?: boolean } = {}): Promise<void> {
    const greet = options.greet ?? true;
    this.#server = createServer((socket) => this.#onConnection(socket, greet));
    await new Promise<void>((resolve, reject) => {
      this.#server?.once('error', reject);
      this.#server?.listen(this.path, () => resolve());
    });
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    this.connections = [];
    const server = this.#server;
    this.#server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #onConnection(socket: Socket, greet: boolean): void {
    const conn: FakeConnection = {
      socket,
      raw: (text) => socket.write(text),
      send: (msg) => socket.write(`${JSON.stringify(msg)}\r\n`),
      event: (name, data) =>
        conn.send({
          event: name,
          ...(data === undefined ? {} : { data }),
          timestamp: { seconds: 1700000000, microseconds: 5 },
        }),
    };
    this.connections.push(conn);
    let negotiated = false;
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const msg = JSON.parse(line) as { execute: string; arguments?: Record<string, unknown>; id?: unknown };
        this.received.push({ execute: msg.execute, id: msg.id });
        void this.#answer(conn, msg, negotiated).then((ok) => {
          if (ok && msg.execute === 'qmp_capabilities') negotiated = true;
        });
      }
    });
    if (greet)
      conn.send({
        QMP: { version: { qemu: { major: 7, minor: 2, micro: 99 }, package: 'fake' }, capabilities: ['oob'] },
      });
  }

  async #answer(
    conn: FakeConnection,
    msg: { execute: string; arguments?: Record<string, unknown>; id?: unknown },
    negotiated: boolean,
  ): Promise<boolean> {
    const id = msg.id === undefined ? {} : { id: msg.id };
    if (msg.execute === 'qmp_capabilities') {
      conn.send(
        negotiated
          ? {
              error: {
                class: 'CommandNotFound',
                desc: 'Capabilities negotiation is already complete, command ignored',
              },
              ...id,
            }
          : { return: {}, ...id },
      );
      return !negotiated;
    }
    const handler = this.handlers[msg.execute];
    if (!negotiated || handler === undefined) {
      if (handler === undefined) this.unknown.push(msg.execute);
      conn.send({ error: { class: 'CommandNotFound', desc: `The command ${msg.execute} has not been found` }, ...id });
      return false;
    }
    const reply = await handler(msg.arguments, conn, msg.id);
    if (reply !== 'hang') conn.send({ ...reply, ...id });
    return true;
  }
}

// ---------------------------------------------------------------------------------------------

let dir: string;
let n = 0;
const sockPath = (): string => join(dir, `qmp-${++n}.sock`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withFake(
  handlers: Record<string, Handler>,
  body: (fake: FakeQmpServer, client: QmpClient) => Promise<void>,
): Promise<void> {
  const fake = new FakeQmpServer(sockPath(), handlers);
  await fake.start();
  const client = await QmpClient.connect(fake.path, { connectTimeoutMs: 2000 });
  try {
    await body(fake, client);
  } finally {
    await client.close();
    await fake.stop();
  }
}

function assertCode(err: unknown, code: MamoriError['code']): MamoriError {
  assert.ok(isMamoriError(err), `expected a MamoriError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

describe('QmpClient against a fake QMP server', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-qmp-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the greeting and negotiates capabilities before anything else', async () => {
    await withFake(
      { 'query-status': () => ({ return: { running: false, singlestep: false, status: 'prelaunch' } }) },
      async (fake, client) => {
        assert.equal(client.greeting?.QMP.version.qemu.micro, 99);
        assert.equal(client.connected, true);
        assert.equal(fake.received[0]?.execute, 'qmp_capabilities');
        const status = await client.execute('query-status');
        assert.equal(status.status, 'prelaunch');
        assert.equal(status.running, false);
        assert.deepEqual(fake.unknown, []);
      },
    );
  });

  it('matches replies by id when they come out of order, mixed with events and split across chunks', async () => {
    let nameId: unknown;
    await withFake(
      {
        'query-name': (_args, _conn, id) => {
          nameId = id;
          return 'hang';
        },
        'query-kvm': async (_args, conn, id) => {
          // the second command's reply, two events, then the first command's reply: cut mid-message
          const text =
            `${JSON.stringify({ return: { enabled: false, present: true }, id })}\r\n` +
            `${JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } })}\r\n` +
            `${JSON.stringify({ event: 'RESUME', data: {}, timestamp: { seconds: 1, microseconds: 3 } })}\n` +
            `${JSON.stringify({ return: { name: 'vm1' }, id: nameId })}\r\n`;
          const cut1 = 7;
          const cut2 = text.indexOf('RESUME') + 2;
          conn.raw(text.slice(0, cut1));
          await sleep(10);
          conn.raw(text.slice(cut1, cut2));
          await sleep(10);
          conn.raw(text.slice(cut2));
          return 'hang' as const;
        },
      },
      async (fake, client) => {
        const events: string[] = [];
        const stops: QmpEvent[] = [];
        client.on('*', (ev) => events.push(ev.event));
        client.on('STOP', (ev) => stops.push(ev));
        const name = client.execute('query-name');
        await sleep(20);
        assert.notEqual(nameId, undefined);
        const kvm = client.execute('query-kvm');
        assert.deepEqual(await kvm, { enabled: false, present: true });
        assert.deepEqual(await name, { name: 'vm1' });
        assert.deepEqual(events, ['STOP', 'RESUME']);
        assert.deepEqual(stops[0]?.data, {}, 'an event without data gets {}');
        assert.deepEqual(stops[0]?.timestamp, { seconds: 1, microseconds: 2 });
        const ids = fake.received.map((r) => r.id);
        assert.equal(new Set(ids).size, ids.length, 'every command carries its own id');
      },
    );
  });

  it('rejects a QMP error with QMP_ERROR carrying command, class and desc', async () => {
    await withFake(
      {
        'blockdev-del': () => ({ error: { class: 'GenericError', desc: "Failed to find node with node-name='nope'" } }),
        device_del: () => ({ error: { class: 'DeviceNotFound', desc: "Device 'x' not found" } }),
      },
      async (fake, client) => {
        const e1 = assertCode(
          await client.execute('blockdev-del', { 'node-name': 'nope' }).catch((e: unknown) => e),
          'QMP_ERROR',
        );
        assert.deepEqual(e1.details, {
          command: 'blockdev-del',
          errorClass: 'GenericError',
          desc: "Failed to find node with node-name='nope'",
        });
        const e2 = assertCode(await client.execute('device_del', { id: 'x' }).catch((e: unknown) => e), 'QMP_ERROR');
        assert.equal(e2.details?.['errorClass'], 'DeviceNotFound');
        // the untyped fallback: a command the fake does not know fails like QEMU does
        const e3 = assertCode(await client.execute('x-no-such-command', {}).catch((e: unknown) => e), 'QMP_ERROR');
        assert.equal(e3.details?.['errorClass'], 'CommandNotFound');
        assert.deepEqual(fake.unknown, ['x-no-such-command']);
        assert.equal(client.connected, true);
      },
    );
  });

  it('times out with QMP_TIMEOUT (outcome unknown), drops the late reply, and keeps working', async () => {
    let late: (() => void) | null = null;
    await withFake(
      {
        stop: (_a, conn, id) => {
          late = () => conn.send({ return: {}, id });
          return 'hang';
        },
        cont: () => ({ return: {} }),
      },
      async (_fake, client) => {
        const err = assertCode(
          await client.execute('stop', undefined, { timeoutMs: 50 }).catch((e: unknown) => e),
          'QMP_TIMEOUT',
        );
        assert.match(err.message, /outcome is unknown/);
        assert.equal(err.details?.['outcome'], 'unknown');
        assert.equal(err.details?.['command'], 'stop');
        assert.notEqual(late, null);
        (late as (() => void) | null)?.();
        assert.deepEqual(await client.execute('cont'), {});
      },
    );
  });

  it('rejects pending commands and event waits with QMP_DISCONNECTED when the socket closes, and emits close', async () => {
    await withFake({ 'query-migrate': () => 'hang' }, async (fake, client) => {
      const closes: QmpCloseInfo[] = [];
      client.on('close', (info) => closes.push(info));
      const a = client.execute('query-migrate').catch((e: unknown) => e);
      const b = client.execute('query-migrate').catch((e: unknown) => e);
      const w = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 }).catch((e: unknown) => e);
      await sleep(20);
      fake.connections[0]?.socket.destroy();
      const ea = assertCode(await a, 'QMP_DISCONNECTED');
      assert.equal(ea.details?.['command'], 'query-migrate');
      assertCode(await b, 'QMP_DISCONNECTED');
      assertCode(await w, 'QMP_DISCONNECTED');
      assert.equal(closes.length, 1);
      assert.equal(closes[0]?.expected, false);
      assert.equal(client.connected, false);
      const ec = assertCode(await client.execute('query-status').catch((e: unknown) => e), 'QMP_DISCONNECTED');
      assert.equal(ec.details?.['sent'], false);
    });
  });

  it('reconnects after the server restarts, keeping event listeners', async () => {
    const handlers: Record<string, Handler> = {
      'query-status': () => ({ return: { running: true, singlestep: false, status: 'running' } }),
    };
    const fake = new FakeQmpServer(sockPath(), handlers);
    await fake.start();
    const client = await QmpClient.connect(fake.path, { connectTimeoutMs: 1000 });
    try {
      const seen: string[] = [];
      client.on('RESET', (ev) => seen.push(`${ev.event}:${ev.data.reason}`));
      const closed = new Promise<QmpCloseInfo>((resolve) => client.on('close', resolve));
      await fake.stop();
      assert.equal((await closed).expected, false);
      // the server comes back a little later; reconnect retries until it does
      setTimeout(() => void fake.start(), 300);
      await client.reconnect({ connectTimeoutMs: 500, retryUntilMs: 5000 });
      assert.equal(client.connected, true);
      assert.equal((await client.execute('query-status')).status, 'running');
      fake.connections[0]?.event('RESET', { guest: true, reason: 'guest-reset' });
      await client.waitForEvent('RESET', { timeoutMs: 1000 }).catch(() => undefined);
      await sleep(20);
      assert.deepEqual(seen, ['RESET:guest-reset']);
      assert.deepEqual(fake.unknown, []);
    } finally {
      await client.close();
      await fake.stop();
    }
  });

  it('connect retries until the socket appears, and fails clearly when it never does', async () => {
    const fake = new FakeQmpServer(sockPath(), {});
    setTimeout(() => void fake.start(), 250);
    const client = await QmpClient.connect(fake.path, { connectTimeoutMs: 500, retryUntilMs: 5000 });
    await client.close();
    await fake.stop();
    const err = assertCode(
      await QmpClient.connect(join(dir, 'absent.sock'), { connectTimeoutMs: 200, retryUntilMs: 300 }).catch(
        (e: unknown) => e,
      ),
      'QMP_DISCONNECTED',
    );
    assert.match(err.message, /ENOENT/);
    assert.ok(Number(err.details?.['attempts']) >= 2);
  });

  it('times out the handshake when the server never greets (another client holds the monitor)', async () => {
    const fake = new FakeQmpServer(sockPath(), {});
    await fake.start({ greet: false });
    try {
      const err = assertCode(
        await QmpClient.connect(fake.path, { connectTimeoutMs: 150 }).catch((e: unknown) => e),
        'QMP_TIMEOUT',
      );
      assert.match(err.message, /handshake/);
    } finally {
      await fake.stop();
    }
  });

  it('waitForEvent honours the predicate and its timeout', async () => {
    await withFake(
      {
        system_powerdown: (_a, conn) => {
          conn.event('JOB_STATUS_CHANGE', { id: 'other', status: 'running' });
          conn.event('JOB_STATUS_CHANGE', { id: 'mine', status: 'concluded' });
          return { return: {} };
        },
      },
      async (_fake, client) => {
        const wait = client.waitForEvent('JOB_STATUS_CHANGE', {
          timeoutMs: 1000,
          predicate: (ev) => ev.data.id === 'mine',
        });
        await client.execute('system_powerdown');
        const ev = await wait;
        assert.equal(ev.data.status, 'concluded');
        assertCode(await client.waitForEvent('SHUTDOWN', { timeoutMs: 30 }).catch((e: unknown) => e), 'QMP_TIMEOUT');
      },
    );
  });

  it('quit resolves and the close that follows is expected', async () => {
    await withFake(
      {
        quit: (_a, conn) => {
          conn.event('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
          setImmediate(() => conn.socket.end());
          return { return: {} };
        },
      },
      async (_fake, client) => {
        const closed = new Promise<QmpCloseInfo>((resolve) => client.on('close', resolve));
        const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 1000 });
        assert.deepEqual(await client.execute('quit'), {});
        assert.equal((await shutdown).data.reason, 'host-qmp-quit');
        assert.equal((await closed).expected, true);
        assert.equal(client.connected, false);
      },
    );
  });

  it('closes the connection on a line that is not JSON', async () => {
    await withFake(
      {
        'query-block': (_a, conn) => {
          conn.raw('this is not json\n');
          return 'hang';
        },
      },
      async (_fake, client) => {
        const closed = new Promise<QmpCloseInfo>((resolve) => client.on('close', resolve));
        assertCode(await client.execute('query-block').catch((e: unknown) => e), 'QMP_DISCONNECTED');
        const info = await closed;
        assert.ok(isMamoriError(info.error, 'QMP_ERROR'));
      },
    );
  });
});

import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isMamoriError, type MamoriError } from '../../../src/core/mamori-error.js';
import { QmpClient, type QmpCloseInfo } from '../../../src/qemu/qmp-client.js';
import { readQemuHostInfo } from '../../../src/qemu/qemu-host-info.js';

interface RunningQemu {
  child: ChildProcess;
  socket: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startQemu(dir: string, name: string): RunningQemu {
  const socket = join(dir, `${name}.qmp`);
  const args = [
    '-machine',
    'q35,accel=tcg',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-S',
    '-qmp',
    `unix:${socket},server=on,wait=off`,
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return { child, socket, stderr: () => stderr, exited };
}

/** Kills QEMU by its own pid if it is still there, and waits for the reap. */
async function stopQemu(q: RunningQemu): Promise<void> {
  if (q.child.exitCode === null && q.child.signalCode === null && q.child.pid !== undefined) {
    process.kill(q.child.pid, 'SIGKILL');
  }
  await q.exited;
}

function errorOf(err: unknown, code: MamoriError['code']): MamoriError {
  assert.ok(isMamoriError(err), `expected a MamoriError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

describe('QmpClient against real QEMU (TCG, -S)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-qmp-it-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('queries status and version, maps a QMP error to its class, sees events, quits cleanly', async () => {
    const qemu = startQemu(dir, 'a');
    try {
      const client = await QmpClient.connect(qemu.socket, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
      const status = await client.execute('query-status');
      assert.equal(status.status, 'prelaunch');
      assert.equal(status.running, false);

      const version = await client.execute('query-version');
      assert.deepEqual(version.qemu, client.greeting?.QMP.version.qemu);

      const del = errorOf(
        await client.execute('blockdev-del', { 'node-name': 'no-such-node' }).catch((e: unknown) => e),
        'QMP_ERROR',
      );
      assert.equal(del.details?.['command'], 'blockdev-del');
      assert.equal(del.details?.['errorClass'], 'GenericError');
      const unknown = errorOf(
        await client.execute('x-mamori-no-such-command', {}).catch((e: unknown) => e),
        'QMP_ERROR',
      );
      assert.equal(unknown.details?.['errorClass'], 'CommandNotFound');

      const resumed = client.waitForEvent('RESUME', { timeoutMs: 5000 });
      await client.execute('cont');
      const ev = await resumed;
      assert.ok(ev.timestamp.seconds > 0);
      assert.equal((await client.execute('query-status')).status, 'running');
      const stopped = client.waitForEvent('STOP', { timeoutMs: 5000 });
      await client.execute('stop');
      await stopped;

      const hmp = await client.execute('human-monitor-command', { 'command-line': 'info status' });
      assert.match(hmp, /paused/);

      const closed = new Promise<QmpCloseInfo>((resolve) => client.on('close', resolve));
      const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
      assert.deepEqual(await client.execute('quit'), {});
      assert.equal((await shutdown).data.reason, 'host-qmp-quit');
      assert.equal((await closed).expected, true);
      assert.equal(client.connected, false);
      const exit = await qemu.exited;
      assert.equal(exit.code, 0, qemu.stderr());
    } finally {
      await stopQemu(qemu);
    }
  });

  it('reconnects to the same QEMU after our client went away; a second client gets no greeting meanwhile', async () => {
    const qemu = startQemu(dir, 'b');
    try {
      const client = await QmpClient.connect(qemu.socket, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
      // QEMU serves one monitor client at a time: the second connection waits without a greeting
      const second = errorOf(
        await QmpClient.connect(qemu.socket, { connectTimeoutMs: 300 }).catch((e: unknown) => e),
        'QMP_TIMEOUT',
      );
      assert.match(second.message, /handshake/);

      await client.close();
      assert.equal(client.connected, false);
      await client.reconnect({ connectTimeoutMs: 2000, retryUntilMs: 5000 });
      assert.equal((await client.execute('query-status')).status, 'prelaunch');
      await client.close();
    } finally {
      await stopQemu(qemu);
    }
  });

  it('rejects pending commands with QMP_DISCONNECTED when QEMU dies', async () => {
    const qemu = startQemu(dir, 'c');
    try {
      const client = await QmpClient.connect(qemu.socket, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
      const closed = new Promise<QmpCloseInfo>((resolve) => client.on('close', resolve));
      const waiting = client.waitForEvent('SHUTDOWN', { timeoutMs: 10_000 }).catch((e: unknown) => e);
      await stopQemu(qemu);
      assert.equal((await closed).expected, false);
      errorOf(await waiting, 'QMP_DISCONNECTED');
      errorOf(await client.execute('query-status').catch((e: unknown) => e), 'QMP_DISCONNECTED');
    } finally {
      await stopQemu(qemu);
    }
  });

  it('query-machines agrees with the parsed -machine help', async () => {
    const qemu = startQemu(dir, 'd');
    try {
      const client = await QmpClient.connect(qemu.socket, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
      const machines = await client.execute('query-machines');
      await client.execute('quit');
      const info = await readQemuHostInfo();
      const fromQmp = machines
        .map((m) => `${m.name}|${m.alias ?? ''}|${m['is-default'] === true}|${m.deprecated}`)
        .sort();
      const fromHelp = info.machineTypes
        .map((m) => `${m.name}|${m.alias ?? ''}|${m.isDefault}|${m.deprecated === true}`)
        .sort();
      assert.deepEqual(fromHelp, fromQmp);
    } finally {
      await stopQemu(qemu);
    }
  });
});

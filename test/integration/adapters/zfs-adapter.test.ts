import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import AjvModule from 'ajv';
import { runProcess } from '../../../src/core/run-process.js';
import {
  GENERIC_ERROR_CODES,
  RESPONSE_SCHEMA,
  RESULT_SCHEMAS,
  type AdapterCommand,
  type AdapterResults,
} from '../../../src/adapters/adapter-protocol.js';
import { repoRoot } from '../../harness/repo-root.js';
import { ZfsFuse, type TestPool } from '../../harness/zfs-fuse.js';

const Ajv = AjvModule.default ?? AjvModule;

/*
 * The bundled ZFS adapter through its real executable, as mamori runs it: one JSON request
 * on stdin, in its own process group, one JSON response on stdout, every response checked
 * against the protocol's schemas. Two pools on one zfs-fuse daemon stand for the two
 * sites (peerCommand [] reaches the "peer" pool on this host). The whole lifecycle runs in
 * order: first full sync, an incremental one whose size is the change, a test failover,
 * planned failover, reprotect and a sync back, and a sync killed mid-stream that leaves
 * the target at its last point and is finished incrementally by the next run.
 */
const MiB = 1024 * 1024;
const LAUNCHER = join(repoRoot, 'adapters', 'zfs', 'mamori-adapter-zfs');
const DEV = 'vmstore';

let zfs: ZfsFuse;
let poolA: TestPool;
let poolB: TestPool;
let connA: Record<string, string>;
let connB: Record<string, string>;
let declared = new Set<string>(GENERIC_ERROR_CODES);
const ajv = new Ajv({ strict: false, allErrors: true });
const checkResponse = ajv.compile(RESPONSE_SCHEMA as object);
const checkResult = new Map(Object.entries(RESULT_SCHEMAS).map(([c, s]) => [c, ajv.compile(s)]));

interface Run {
  response: {
    protocol: number;
    result?: unknown;
    error?: { code: string; message: string; details?: Record<string, unknown> };
  };
  stderr: string;
}

/** Runs the launcher once in its own process group; `onStderr` sees stderr as it comes and may kill the group. */
function runAdapter(
  request: unknown,
  onStderr?: (text: string, pid: number) => void,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(LAUNCHER, [], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.pid && process.kill(-child.pid, 'SIGKILL'), 300_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      onStderr?.(stderr, child.pid!);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(typeof request === 'string' ? request : JSON.stringify(request));
  });
}

/** One command; the response must be exactly one JSON object on stdout, valid for the command, exit 0. */
async function call(conn: Record<string, string>, command: string, args: Record<string, unknown> = {}): Promise<Run> {
  const r = await runAdapter({ protocol: 1, command, connection: conn, arguments: args });
  assert.equal(r.code, 0, `${command} exited ${r.code} (${r.signal}): ${r.stderr.slice(-2000)}`);
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `${command}: stdout must be one JSON line, got ${JSON.stringify(r.stdout)}`);
  const response = JSON.parse(lines[0]!) as Run['response'];
  assert.ok(
    checkResponse(response),
    `${command}: response ${lines[0]} does not match RESPONSE_SCHEMA: ${ajv.errorsText(checkResponse.errors)}`,
  );
  if ('result' in response) {
    const check = checkResult.get(command)!;
    assert.ok(
      check(response.result),
      `${command}: result ${lines[0]} does not match its schema: ${ajv.errorsText(check.errors)}`,
    );
  } else {
    assert.ok(
      declared.has(response.error!.code),
      `${command}: error code ${response.error!.code} is neither generic nor declared`,
    );
  }
  for (const line of r.stderr.split('\n').filter((l) => l.startsWith('{'))) {
    const p = JSON.parse(line) as { progress: unknown; message: unknown };
    assert.ok(
      typeof p.progress === 'number' && p.progress >= 0 && p.progress <= 1 && typeof p.message === 'string',
      `bad progress line ${line}`,
    );
  }
  return { response, stderr: r.stderr };
}

async function ok<C extends AdapterCommand>(
  conn: Record<string, string>,
  command: C,
  args: Record<string, unknown> = {},
): Promise<AdapterResults[C]> {
  const { response, stderr } = await call(conn, command, args);
  assert.ok('result' in response, `${command} failed: ${JSON.stringify(response.error)}\n${stderr.slice(-2000)}`);
  return response.result as AdapterResults[C];
}

async function fails(
  conn: Record<string, string>,
  command: string,
  args: Record<string, unknown> = {},
): Promise<{ code: string; message: string }> {
  const { response } = await call(conn, command, args);
  assert.ok(response.error, `${command} should have failed, answered ${JSON.stringify(response.result)}`);
  return response.error;
}

async function zfsCmd(...args: string[]): Promise<string> {
  return (await runProcess('zfs', args, { timeoutMs: 120_000 })).stdout.trim();
}

/** Snapshot name → guid of a dataset. */
async function snapshotGuids(dataset: string): Promise<Map<string, string>> {
  const text = await zfsCmd('get', '-Hp', '-r', '-d', '1', '-o', 'name,value', 'guid', dataset);
  return new Map(
    text
      .split('\n')
      .filter((l) => l.startsWith(`${dataset}@`))
      .map((l) => {
        const [name, guid] = l.split('\t');
        return [name!.slice(dataset.length + 1), guid!];
      }),
  );
}

async function device(
  conn: Record<string, string>,
  arrayId: string,
  id: string,
): Promise<AdapterResults['discoverDevices']['devices'][number] | undefined> {
  return (await ok(conn, 'discoverDevices', { arrayId })).devices.find((d) => d.id === id);
}

/** Reads files of a target through a test copy (a target is never mounted), then removes the copy. */
async function readThroughTestCopy(conn: Record<string, string>, arrayId: string, files: string[]): Promise<Buffer[]> {
  const started = await ok(conn, 'testFailoverStart', { arrayId, deviceIds: [DEV] });
  const path = started.devices[0]!.testDevice.path;
  assert.ok(path, 'the test copy is mounted');
  const out = await Promise.all(files.map((f) => readFile(join(path, f))));
  assert.deepEqual((await ok(conn, 'testFailoverStop', { arrayId, deviceIds: [DEV] })).devices, [
    { id: DEV, removed: true },
  ]);
  return out;
}

before(async () => {
  zfs = await ZfsFuse.acquire();
  poolA = await zfs.createPool('a');
  poolB = await zfs.createPool('b');
  connA = { pools: poolA.name, peerCommand: '[]' };
  connB = { pools: poolB.name, peerCommand: '[]' };
  await zfsCmd('create', `${poolA.name}/${DEV}`);
  await zfsCmd('create', `${poolA.name}/plain`);
  await writeFile(join(poolA.mountpoint, DEV, 'first.bin'), randomBytes(1 * MiB));
});

after(async () => {
  if (zfs) await zfs.release();
});

test('the queries describe the adapter, its parameters and every error code it answers', async () => {
  const info = await ok({}, 'queryInfo');
  assert.equal(info.name, 'zfs');
  assert.deepEqual(info.protocolVersions, [1]);
  const caps = await ok({}, 'queryCapabilities');
  assert.deepEqual(caps.features, { testFailover: true, reverseReplication: true, consistencyGroups: false });
  assert.deepEqual(caps.deviceKinds, ['filesystem']);
  const params = await ok({}, 'queryConnectionParameters');
  assert.deepEqual(
    params.parameters.map((p) => p.name),
    ['pools', 'peerCommand'],
  );
  const errors = await ok({}, 'queryErrorDefinitions');
  declared = new Set([...GENERIC_ERROR_CODES, ...errors.errors.map((e) => e.code)]);
  for (const c of ['POOL_NOT_FOUND', 'NOT_REPLICATED', 'NO_COMMON_POINT', 'ZFS_COMMAND_FAILED', 'PEER_UNREACHABLE'])
    assert.ok(declared.has(c), `${c} is declared`);
});

test('discovery: the pool is the array, its filesystems the devices; mamori:peer makes one a source', async () => {
  const arrays = await ok(connA, 'discoverArrays');
  assert.equal(arrays.arrays.length, 1);
  assert.equal(arrays.arrays[0]!.id, poolA.name);
  assert.deepEqual(arrays.arrays[0]!.peers, []);
  // zfs-fuse's pools are legacy version 23 (no feature flags): what the guide's version row matches.
  assert.deepEqual(
    [arrays.arrays[0]!.model, arrays.arrays[0]!.softwareVersion, arrays.arrays[0]!.features],
    ['zpool', 'pool version 23', []],
  );

  const before = await device(connA, poolA.name, DEV);
  assert.equal(before?.role, 'unreplicated');
  assert.equal(before?.kind, 'filesystem');
  assert.equal(before?.path, join(poolA.mountpoint, DEV));
  assert.ok(before!.sizeBytes > 1 * MiB);

  await zfsCmd('set', `mamori:peer=${poolB.name}/${DEV}`, `${poolA.name}/${DEV}`);
  const after = await device(connA, poolA.name, DEV);
  assert.equal(after?.role, 'source');
  assert.deepEqual(after?.peer, { arrayId: poolB.name, deviceId: DEV });
  assert.deepEqual((await ok(connA, 'discoverArrays')).arrays[0]!.peers, [poolB.name]);
  const settings = await ok(connA, 'queryReplicationSettings', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.deepEqual(settings.devices[0], {
    id: DEV,
    mode: 'async',
    direction: 'outgoing',
    peer: { arrayId: poolB.name, deviceId: DEV },
    pointsKept: 3,
  });
});

test('bad requests answer declared errors, on stdout, with exit 0', async () => {
  assert.equal((await fails(connA, 'frobnicate')).code, 'UNKNOWN_COMMAND');
  assert.equal(
    (await fails(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: ['no-such-dataset'] })).code,
    'DEVICE_NOT_FOUND',
  );
  assert.equal((await fails(connA, 'discoverDevices', { arrayId: 'mamori-no-such-pool' })).code, 'ARRAY_NOT_FOUND');
  assert.equal(
    (await fails({ pools: 'mamori-no-such-pool', peerCommand: '[]' }, 'discoverArrays')).code,
    'POOL_NOT_FOUND',
  );
  assert.equal((await fails(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: ['plain'] })).code, 'NOT_REPLICATED');
  assert.equal((await fails(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: [] })).code, 'INVALID_REQUEST');
  assert.equal(
    (await fails({ pools: poolA.name, peerCommand: 'ssh site-b' }, 'discoverArrays')).code,
    'INVALID_REQUEST',
  );

  const garbage = await runAdapter('{"protocol":1, "command":');
  assert.equal(garbage.code, 0);
  assert.equal((JSON.parse(garbage.stdout) as Run['response']).error?.code, 'INVALID_REQUEST');
});

test('the first syncOnce copies the whole dataset and makes the peer a read-only, unmounted target', async () => {
  const r = await ok(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(r.devices.length, 1);
  assert.match(r.devices[0]!.point, /^mamori-\d{8}T\d{6}Z-\d+$/);
  assert.ok(r.devices[0]!.bytesSent > 1 * MiB, `a full send carries the 1 MiB file (${r.devices[0]!.bytesSent})`);

  const target = await device(connB, poolB.name, DEV);
  assert.equal(target?.role, 'target');
  assert.equal(target?.path, null, 'a target is not mounted');
  assert.deepEqual(target?.peer, { arrayId: poolA.name, deviceId: DEV });
  assert.equal(await zfsCmd('get', '-H', '-o', 'value', 'mamori:role', `${poolA.name}/${DEV}`), 'source');
  const status = await ok(connA, 'querySyncStatus', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(status.devices[0]!.lastPoint, r.devices[0]!.point);
  assert.equal(status.devices[0]!.peerLastPoint, r.devices[0]!.point);
  assert.equal(status.devices[0]!.inSync, true);
  assert.equal((await fails(connB, 'syncOnce', { arrayId: poolB.name, deviceIds: [DEV] })).code, 'WRONG_ROLE');
});

test('an incremental syncOnce sends about the 2 MiB that changed, and the target holds the same bytes', async (t) => {
  const data = randomBytes(2 * MiB);
  await writeFile(join(poolA.mountpoint, DEV, 'two.bin'), data);
  const r = await ok(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  const sent = r.devices[0]!.bytesSent;
  t.diagnostic(`incremental send of a 2 MiB change: ${sent} bytes`);
  assert.ok(sent >= 2 * MiB && sent < 2 * MiB + 512 * 1024, `an incremental send of a 2 MiB change sent ${sent} bytes`);
  const [copy] = await readThroughTestCopy(connB, poolB.name, ['two.bin']);
  assert.ok(copy!.equals(data), 'the target holds the bytes written on the source');
});

test('a test failover gives a writable copy that changes neither side, and replication goes on beside it', async () => {
  const targetDs = `${poolB.name}/${DEV}`;
  const referencedBefore = await zfsCmd('get', '-Hp', '-o', 'value', 'referenced', targetDs);
  const started = await ok(connB, 'testFailoverStart', { arrayId: poolB.name, deviceIds: [DEV] });
  const t = started.devices[0]!;
  assert.equal(t.testDevice.id, `${DEV}-mamori-test`);
  assert.ok(t.testDevice.path);
  assert.ok((await readFile(join(t.testDevice.path, 'first.bin'))).length === 1 * MiB);
  await writeFile(join(t.testDevice.path, 'test-only.bin'), randomBytes(256 * 1024));

  // Idempotent: a second start answers the same copy.
  assert.deepEqual((await ok(connB, 'testFailoverStart', { arrayId: poolB.name, deviceIds: [DEV] })).devices[0], t);
  // The copy is not a device of its own.
  assert.equal(await device(connB, poolB.name, `${DEV}-mamori-test`), undefined);
  assert.equal(
    existsSync(join(poolA.mountpoint, DEV, 'test-only.bin')),
    false,
    'the source did not get the test write',
  );
  assert.equal(
    await zfsCmd('get', '-Hp', '-o', 'value', 'referenced', targetDs),
    referencedBefore,
    'the target did not change',
  );

  await writeFile(join(poolA.mountpoint, DEV, 'during-test.bin'), randomBytes(64 * 1024));
  const sync = await ok(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.ok(sync.devices[0]!.bytesSent < 1 * MiB);

  assert.deepEqual((await ok(connB, 'testFailoverStop', { arrayId: poolB.name, deviceIds: [DEV] })).devices, [
    { id: DEV, removed: true },
  ]);
  assert.deepEqual((await ok(connB, 'testFailoverStop', { arrayId: poolB.name, deviceIds: [DEV] })).devices, [
    { id: DEV, removed: false },
  ]);
  assert.equal(
    await zfsCmd('list', '-H', '-o', 'name', '-d', '1', '-t', 'filesystem', poolB.name).then((t) =>
      t.includes('mamori-test'),
    ),
    false,
  );
});

let failoverPoint = '';

test('planned failover: the source goes read-only after a last point, the target becomes read-write with the data', async () => {
  await writeFile(join(poolA.mountpoint, DEV, 'last.bin'), randomBytes(128 * 1024));
  const prep = await ok(connA, 'prepareFailover', { arrayId: poolA.name, deviceIds: [DEV] });
  failoverPoint = prep.devices[0]!.point;
  await assert.rejects(writeFile(join(poolA.mountpoint, DEV, 'too-late.bin'), 'x'), /EROFS|read-only/i);

  const fo = await ok(connB, 'failover', { arrayId: poolB.name, deviceIds: [DEV] });
  assert.equal(fo.devices[0]!.point, failoverPoint);
  const path = fo.devices[0]!.path;
  assert.equal(path, join(poolB.mountpoint, DEV));
  assert.ok((await readFile(join(path!, 'last.bin'))).equals(await readFile(join(poolA.mountpoint, DEV, 'last.bin'))));
  assert.equal(existsSync(join(path!, 'test-only.bin')), false, "the test copy's write is not in the failed-over data");
  assert.deepEqual(
    (await ok(connB, 'failover', { arrayId: poolB.name, deviceIds: [DEV] })).devices,
    fo.devices,
    'a repeat answers the same',
  );
  assert.equal((await device(connB, poolB.name, DEV))?.role, 'failedOver');

  // The old source still says source; its sync must not overwrite the failed-over side.
  assert.equal((await fails(connA, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] })).code, 'PEER_CONFLICT');
});

const afterFailover = randomBytes(1 * MiB);

test('reprotect: the old source becomes the target and the failed-over side syncs back incrementally', async () => {
  const path = join(poolB.mountpoint, DEV);
  await writeFile(join(path, 'after-failover.bin'), afterFailover);

  const prep = await ok(connA, 'prepareReverseReplication', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(prep.devices[0]!.commonPoint, failoverPoint);
  assert.deepEqual(
    (await ok(connA, 'prepareReverseReplication', { arrayId: poolA.name, deviceIds: [DEV] })).devices,
    prep.devices,
  );
  const old = await device(connA, poolA.name, DEV);
  assert.equal(old?.role, 'target');
  assert.equal(old?.path, null);

  const rev = await ok(connB, 'reverseReplication', { arrayId: poolB.name, deviceIds: [DEV] });
  assert.deepEqual(rev.devices[0], {
    id: DEV,
    peer: { arrayId: poolA.name, deviceId: DEV },
    commonPoint: failoverPoint,
  });
  assert.deepEqual(
    (await ok(connB, 'reverseReplication', { arrayId: poolB.name, deviceIds: [DEV] })).devices,
    rev.devices,
    'a repeat answers the same',
  );
  assert.equal((await device(connB, poolB.name, DEV))?.role, 'source');

  const guidsBefore = await snapshotGuids(`${poolA.name}/${DEV}`);
  const sync = await ok(connB, 'syncOnce', { arrayId: poolB.name, deviceIds: [DEV] });
  const sent = sync.devices[0]!.bytesSent;
  assert.ok(sent >= 1 * MiB && sent < 1 * MiB + 512 * 1024, `the sync back sent the 1 MiB change only (${sent} bytes)`);
  assert.equal(
    (await snapshotGuids(`${poolA.name}/${DEV}`)).get(failoverPoint),
    guidsBefore.get(failoverPoint),
    'the common point is kept on the old source',
  );
  const [copy] = await readThroughTestCopy(connA, poolA.name, ['after-failover.bin']);
  assert.ok(copy!.equals(afterFailover));
});

test('a syncOnce killed mid-stream leaves the target at its last point; the next one finishes incrementally', async (t) => {
  const targetDs = `${poolA.name}/${DEV}`;
  const big = randomBytes(64 * MiB);
  await writeFile(join(poolB.mountpoint, DEV, 'big.bin'), big);
  const lastBefore = (await ok(connB, 'querySyncStatus', { arrayId: poolB.name, deviceIds: [DEV] })).devices[0]!
    .peerLastPoint;
  assert.ok(lastBefore);
  const guidsBefore = await snapshotGuids(targetDs);

  // Killed as mamori kills at a time limit: the whole process group, once 8 MiB went through.
  let killedAt = '';
  const cut = await runAdapter(
    { protocol: 1, command: 'syncOnce', connection: connB, arguments: { arrayId: poolB.name, deviceIds: [DEV] } },
    (stderr, pid) => {
      const sent = [...stderr.matchAll(/sent (\d+(?:\.\d+)?) MiB/g)].map((m) => Number(m[1]));
      if (!killedAt && sent.some((s) => s >= 8)) {
        killedAt = `${sent.at(-1)} MiB`;
        process.kill(-pid, 'SIGKILL');
      }
    },
  );
  assert.ok(killedAt, `the sync was not seen mid-stream: ${cut.stderr.slice(-1000)}`);
  t.diagnostic(`adapter process group killed after ${killedAt} of the 64 MiB change`);
  assert.equal(cut.signal, 'SIGKILL', `the adapter ended by the kill at ${killedAt}, not on its own (${cut.stdout})`);

  assert.deepEqual(await snapshotGuids(targetDs), guidsBefore, 'the target holds exactly the snapshots it had');
  const statusA = await ok(connA, 'querySyncStatus', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(statusA.devices[0]!.lastPoint, lastBefore, 'the target is at its last point');

  const again = await ok(connB, 'syncOnce', { arrayId: poolB.name, deviceIds: [DEV] });
  const sent = again.devices[0]!.bytesSent;
  const whole = Number(await zfsCmd('get', '-Hp', '-o', 'value', 'referenced', `${poolB.name}/${DEV}`));
  t.diagnostic(`the rerun sent ${sent} bytes; the whole dataset is ${whole}`);
  assert.ok(
    sent >= 64 * MiB && sent < 64 * MiB + 1 * MiB,
    `the rerun sent the 64 MiB change, not the whole ${whole} bytes (${sent})`,
  );
  assert.equal(
    (await snapshotGuids(targetDs)).get(lastBefore),
    guidsBefore.get(lastBefore),
    'sent from the point the target kept',
  );
  const status = await ok(connB, 'querySyncStatus', { arrayId: poolB.name, deviceIds: [DEV] });
  assert.equal(status.devices[0]!.inSync, true);
  const [copy] = await readThroughTestCopy(connA, poolA.name, ['big.bin']);
  assert.ok(copy!.equals(big), 'the target holds the 64 MiB file whole');
});

test('restoreReplication rolls a target that was written to back to the common point and syncs', async () => {
  const targetDs = `${poolA.name}/${DEV}`;
  // Someone made the target writable and wrote to it (a cut link, a hand-run failover test).
  await zfsCmd('set', 'readonly=off', targetDs);
  await zfsCmd('set', 'canmount=on', targetDs);
  await zfsCmd('mount', targetDs);
  await writeFile(join(poolA.mountpoint, DEV, 'stray.bin'), 'stray');
  await zfsCmd('snapshot', `${targetDs}@by-hand`);
  const r = await ok(connB, 'restoreReplication', { arrayId: poolB.name, deviceIds: [DEV] });
  assert.match(r.devices[0]!.point, /^mamori-/);
  assert.equal((await snapshotGuids(targetDs)).has('by-hand'), false);
  const t = await device(connA, poolA.name, DEV);
  assert.equal(t?.role, 'target');
  assert.equal(t?.path, null);
  const status = await ok(connB, 'querySyncStatus', { arrayId: poolB.name, deviceIds: [DEV] });
  assert.equal(status.devices[0]!.inSync, true);
  // Points kept: at most three of the adapter's own on each side.
  for (const ds of [targetDs, `${poolB.name}/${DEV}`]) {
    assert.ok(
      [...(await snapshotGuids(ds)).keys()].filter((n) => n.startsWith('mamori-')).length <= 3,
      `${ds} keeps at most 3 points`,
    );
  }
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import type { AdapterCommand, AdapterErrorBody, AdapterResults } from '../../../src/adapters/adapter-protocol.js';
import { repoRoot } from '../../harness/repo-root.js';
import { NetNs, VethLink, runTag } from '../../harness/netns.js';
import { TestSshd } from '../../harness/sshd.js';
import { ZfsFuse, type TestPool } from '../../harness/zfs-fuse.js';

/*
 * The ZFS adapter's peerCommand path over real ssh: the adapter runs in one network
 * namespace (site A), an sshd of the test's own listens in another (site B) across a veth
 * link, and peerCommand is `ssh ... root@<B's address>`. Every peer zfs command, and
 * `zfs recv` fed the stream, goes through that sshd. Both "hosts" are this machine (one
 * zfs-fuse daemon serves both pools, reached through its socket from either namespace),
 * so the test checks on the peer pool directly what arrived through ssh. Both namespaces
 * enter the network namespace only (nsenter --net), sharing the host's mounts, as the
 * zfs-fuse datasets need (see NetNs.hostMounts).
 */
const MiB = 1024 * 1024;
const LAUNCHER = join(repoRoot, 'adapters', 'zfs', 'mamori-adapter-zfs');
const DEV = 'vmstore';
const SSH_PORT = 2022;

let zfs: ZfsFuse | undefined;
let poolA: TestPool;
let poolB: TestPool;
const namespaces: NetNs[] = [];
let link: VethLink;
let sshd: TestSshd | undefined;
let conn: Record<string, string>;

type Response<C extends AdapterCommand> = { result: AdapterResults[C] } | { error: AdapterErrorBody };

/** One adapter run inside site A's namespace, in its own process group; its one JSON response. */
function call<C extends AdapterCommand>(
  connection: Record<string, string>,
  command: C,
  args: Record<string, unknown> = {},
): Promise<Response<C> & { stderr: string }> {
  const [file, argv] = namespaces[0]!.wrap(LAUNCHER, []);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.pid && process.kill(-child.pid, 'SIGKILL'), 300_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${command} exited ${code}: ${stderr.slice(-2000)}`));
      try {
        resolve({ ...(JSON.parse(stdout) as Response<C>), stderr });
      } catch {
        reject(new Error(`${command}: stdout is not one JSON response: ${JSON.stringify(stdout)}`));
      }
    });
    child.stdin.end(JSON.stringify({ protocol: 1, command, connection, arguments: args }));
  });
}

async function ok<C extends AdapterCommand>(
  connection: Record<string, string>,
  command: C,
  args: Record<string, unknown> = {},
): Promise<AdapterResults[C]> {
  const r = await call(connection, command, args);
  if ('error' in r) assert.fail(`${command} failed: ${JSON.stringify(r.error)}\n${r.stderr.slice(-2000)}`);
  return r.result;
}

async function fails(
  connection: Record<string, string>,
  command: AdapterCommand,
  args: Record<string, unknown> = {},
): Promise<AdapterErrorBody> {
  const r = await call(connection, command, args);
  if (!('error' in r)) assert.fail(`${command} should have failed, answered ${JSON.stringify(r.result)}`);
  return r.error;
}

async function zfsGet(dataset: string, props: string): Promise<string[]> {
  return (await runProcess('zfs', ['get', '-H', '-o', 'value', props, dataset], { timeoutMs: 60_000 })).stdout
    .trim()
    .split('\n');
}

async function guids(dataset: string): Promise<string[]> {
  const text = (
    await runProcess('zfs', ['get', '-Hp', '-r', '-d', '1', '-o', 'name,value', 'guid', dataset], { timeoutMs: 60_000 })
  ).stdout;
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${dataset}@`))
    .map((l) => l.replace(/^[^@]*/, ''))
    .sort();
}

before(async () => {
  zfs = await ZfsFuse.acquire();
  poolA = await zfs.createPool('a');
  poolB = await zfs.createPool('b');
  await runProcess('zfs', ['create', `${poolA.name}/${DEV}`], { timeoutMs: 60_000 });
  await writeFile(join(poolA.mountpoint, DEV, 'first.bin'), randomBytes(1 * MiB));
  await runProcess('zfs', ['set', `mamori:peer=${poolB.name}/${DEV}`, `${poolA.name}/${DEV}`], { timeoutMs: 60_000 });

  const tag = runTag();
  const short = tag.split('-')[1]!;
  for (const side of ['a', 'b']) {
    const ns = await NetNs.create(`mamori-${tag}-ssh${side}`);
    ns.hostMounts = true;
    namespaces.push(ns);
  }
  link = await VethLink.create(namespaces[0]!, namespaces[1]!, {
    devA: `ms${short}a`,
    devB: `ms${short}b`,
    addresses: ['10.214.0.1', '10.214.0.2'],
  });
  sshd = await TestSshd.start({ netns: namespaces[1]!, address: link.b.address, port: SSH_PORT });
  conn = { pools: poolA.name, peerCommand: JSON.stringify(sshd.clientCommand()) };
});

after(async () => {
  if (sshd) await sshd.destroy();
  for (const ns of namespaces) await ns.delete();
  if (zfs) await zfs.release();
});

test('from site A the peer command logs in to the peer host and runs zpool there', async () => {
  const logins = sshd!.logins;
  const [ssh, ...args] = sshd!.clientCommand();
  const r = await namespaces[0]!.run(ssh!, [...args, 'zpool', 'list', '-H', '-o', 'name', poolB.name], {
    timeoutMs: 30_000,
  });
  assert.equal(r.stdout.trim(), poolB.name);
  assert.equal(await sshd!.waitLogins(logins + 1), logins + 1, 'one login for one command');
  assert.match(
    sshd!.log,
    new RegExp(`Accepted publickey for root from ${link.a.address.replace(/\./g, '\\.')} `),
    "from site A's end of the link",
  );
});

test('the first syncOnce sends the dataset through ssh into zfs recv on the peer host, which makes it a target', async () => {
  const logins = sshd!.logins;
  const arrays = await ok(conn, 'discoverArrays');
  assert.deepEqual(
    arrays.arrays.map((a) => [a.id, a.softwareVersion, a.features, a.peers]),
    [[poolA.name, 'pool version 23', [], [poolB.name]]],
  );

  const r = await ok(conn, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(r.devices.length, 1);
  assert.ok(r.devices[0]!.bytesSent > 1 * MiB, `${r.devices[0]!.bytesSent} bytes sent for 1 MiB of data`);
  // What arrived, read on the peer pool itself (not through the adapter).
  assert.deepEqual(await zfsGet(`${poolB.name}/${DEV}`, 'mamori:role,mamori:peer,readonly,mounted'), [
    'target',
    `${poolA.name}/${DEV}`,
    'on',
    'no',
  ]);
  assert.deepEqual(
    await guids(`${poolB.name}/${DEV}`),
    await guids(`${poolA.name}/${DEV}`),
    'the peer holds the very snapshot sent',
  );
  assert.ok((await guids(`${poolB.name}/${DEV}`)).some((g) => g.includes(`@${r.devices[0]!.point}`)));
  // Reading the peer's state, its snapshots, zfs recv, then the properties that make a target: each a login.
  await sshd!.waitLogins(logins + 4);
});

test('an incremental syncOnce over ssh sends about what changed, and querySyncStatus asks the peer through ssh', async () => {
  await writeFile(join(poolA.mountpoint, DEV, 'second.bin'), randomBytes(2 * MiB));
  const logins = sshd!.logins;
  const r = await ok(conn, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  const sent = r.devices[0]!.bytesSent;
  assert.ok(sent >= 2 * MiB && sent < 2.5 * MiB, `${sent} bytes for 2 MiB changed`);
  const status = await ok(conn, 'querySyncStatus', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.deepEqual(
    [status.devices[0]!.lastPoint, status.devices[0]!.peerLastPoint, status.devices[0]!.inSync],
    [r.devices[0]!.point, r.devices[0]!.point, true],
  );
  // The sync's peer state, snapshots and zfs recv, and the status's peer state and snapshots: each a login.
  await sshd!.waitLogins(logins + 5);
});

test("a key the peer refuses, then the peer's sshd gone: PEER_UNREACHABLE, and querySyncStatus still answers", async () => {
  const point = (await guids(`${poolA.name}/${DEV}`)).length;
  const stranger = { pools: poolA.name, peerCommand: JSON.stringify(sshd!.clientCommand('stranger')) };
  const refused = await fails(stranger, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(refused.code, 'PEER_UNREACHABLE');
  assert.match(refused.message, /Permission denied \(publickey\)/);
  const blind = await ok(stranger, 'querySyncStatus', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.deepEqual([blind.devices[0]!.peerLastPoint, blind.devices[0]!.inSync], [null, false]);
  assert.ok(blind.devices[0]!.lastPoint !== null);

  await sshd!.stop();
  const down = await fails(conn, 'syncOnce', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.equal(down.code, 'PEER_UNREACHABLE');
  assert.match(down.message, /Connection refused/);
  const status = await ok(conn, 'querySyncStatus', { arrayId: poolA.name, deviceIds: [DEV] });
  assert.deepEqual([status.devices[0]!.peerLastPoint, status.devices[0]!.inSync], [null, false]);
  assert.equal(
    (await guids(`${poolA.name}/${DEV}`)).length,
    point,
    'no point was taken for a sync that could not reach the peer',
  );
});

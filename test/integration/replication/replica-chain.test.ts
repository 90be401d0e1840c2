import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { access, copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { runProcess } from '../../../src/core/run-process.js';
import { StorageDaemon, type StorageDaemonConfig } from '../../../src/qemu/storage-daemon.js';
import { ReplicaChain, type ChainLayer } from '../../../src/replication/replica-chain.js';
import { chainImageSpec, offlineMerge } from '../../../src/replication/chain-images.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const SIZE = 4 * MiB;

/**
 * A CA, a server certificate for 127.0.0.1 and two client certificates from that CA (the
 * paired peer and an intruder), laid out as QEMU's x509 creds want them.
 */
async function makePki(dir: string): Promise<{ server: string; client: string; intruder: string }> {
  const server = join(dir, 'server');
  const client = join(dir, 'client');
  const intruder = join(dir, 'intruder');
  for (const d of [server, client, intruder]) await mkdir(d, { recursive: true });
  const ssl = (args: string[]) => runProcess('openssl', args, { timeoutMs: 30_000 });
  await ssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    join(dir, 'ca-key.pem'),
    '-out',
    join(server, 'ca-cert.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=mamori test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await copyFile(join(server, 'ca-cert.pem'), join(client, 'ca-cert.pem'));
  await copyFile(join(server, 'ca-cert.pem'), join(intruder, 'ca-cert.pem'));
  const issue = async (name: string, out: string, subject: string, ext: string): Promise<void> => {
    await ssl([
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(out, `${name}-key.pem`),
      '-out',
      join(out, `${name}.csr`),
      '-subj',
      subject,
    ]);
    await writeFile(join(out, `${name}.ext`), ext);
    await ssl([
      'x509',
      '-req',
      '-in',
      join(out, `${name}.csr`),
      '-CA',
      join(server, 'ca-cert.pem'),
      '-CAkey',
      join(dir, 'ca-key.pem'),
      '-CAcreateserial',
      '-out',
      join(out, `${name}-cert.pem`),
      '-days',
      '1',
      '-extfile',
      join(out, `${name}.ext`),
    ]);
  };
  await issue(
    'server',
    server,
    '/CN=127.0.0.1',
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n',
  );
  const clientExt =
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';
  await issue('client', client, '/CN=mamori-peer', clientExt);
  await issue('client', intruder, '/CN=intruder', clientExt);
  return { server, client, intruder };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function qemuIo(target: string[], commands: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runProcess('qemu-io', [...target, ...commands.flatMap((c) => ['-c', c])], {
    okCodes: [0, 1],
    timeoutMs: 30_000,
  });
}

const unixTarget = (sock: string, exp: string): string[] => [
  '--image-opts',
  `driver=nbd,server.type=unix,server.path=${sock},export=${exp}`,
];

/** Identical contents (qemu-img compare: exit 0), reading the replica through its explicit chain. */
async function assertReads(layers: ChainLayer[], expectedRaw: string): Promise<void> {
  const r = await runProcess('qemu-img', ['compare', '-f', 'raw', expectedRaw, chainImageSpec(layers)], {
    okCodes: [0, 1],
  });
  assert.equal(r.code, 0, `chain differs from ${expectedRaw}: ${r.stdout}`);
}

describe('replica chain served by qemu-storage-daemon (real qemu-img, qemu-io, qemu-storage-daemon)', () => {
  let dir: string;
  let replicaDir: string;
  let pki: { server: string; client: string; intruder: string };
  const daemons: StorageDaemon[] = [];
  const expected = (n: number) => join(dir, `expected-${n}.raw`);
  const live = () => join(dir, 'expected.raw');

  const startDaemon = async (config: Omit<StorageDaemonConfig, 'qmpSocket' | 'pidFile'>): Promise<StorageDaemon> => {
    const d = await StorageDaemon.start({ qmpSocket: join(dir, 'qsd.qmp'), pidFile: join(dir, 'qsd.pid'), ...config });
    daemons.push(d);
    return d;
  };
  /** Applies the same writes to the expected image as the replica gets. */
  const expectWrite = async (pattern: number, offset: number, length: number): Promise<void> => {
    const r = await qemuIo(['-f', 'raw', live()], [`write -P ${pattern} ${offset} ${length}`]);
    assert.equal(r.code, 0, r.stderr);
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-replica-it-'));
    replicaDir = join(dir, 'replica');
    pki = await makePki(join(dir, 'pki'));
    await runProcess('qemu-img', ['create', '-q', '-f', 'raw', live(), String(SIZE)]);
  });
  after(async () => {
    for (const d of daemons) await d.kill().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('cycles over a unix socket and over TLS TCP become points that read back exactly', async () => {
    const chain = await ReplicaChain.create(replicaDir, { virtualSize: SIZE });
    assert.equal(chain.newestPoint(), null);

    // Cycle 1, unix socket: a first full copy with qemu-img convert -n, then a write with qemu-io.
    const c1 = await chain.beginCycle();
    assert.deepEqual(
      c1.layers.map((l) => l.file),
      [join(replicaDir, 'base.qcow2'), c1.file],
    );
    const sock = join(dir, 'replica.nbd');
    const d1 = await startDaemon({
      chains: [{ id: 'replica', layers: c1.layers }],
      nbd: { listen: { type: 'unix', path: sock } },
      exports: [{ id: 'replica', node: 'replica', writable: true }],
    });
    await expectWrite(0x11, 0, 256 * KiB);
    await expectWrite(0xaa, 1 * MiB, 64 * KiB);
    await runProcess('qemu-img', [
      'convert',
      '-n',
      '-f',
      'raw',
      live(),
      '--target-image-opts',
      `driver=nbd,server.type=unix,server.path=${sock},export=replica`,
    ]);
    assert.equal((await qemuIo(unixTarget(sock, 'replica'), ['write -P 0x12 2M 4k', 'flush'])).code, 0);
    await expectWrite(0x12, 2 * MiB, 4 * KiB);
    await assert.rejects(
      chain.commitCycle({ time: new Date().toISOString(), consistency: 'crash' }),
      (e) => isMamoriError(e, 'DISK_IN_USE'),
      'no commit while the daemon still has the staging image open',
    );
    assert.equal(await d1.stop(), true);
    const p1 = await chain.commitCycle({ time: '2026-01-01T00:00:00.000Z', consistency: 'crash' });
    assert.equal(p1.id, 'p000001');
    assert.deepEqual(
      p1.layers.map((l) => l.file),
      [join(replicaDir, 'base.qcow2'), join(replicaDir, 'p000001.qcow2')],
    );
    await assert.rejects(access(c1.file), 'staging renamed');
    await copyFile(live(), expected(1));
    await assertReads(p1.layers, expected(1));

    // Cycle 2, TLS over TCP with client certificates; the server is "restarted" and re-attaches.
    const c2 = await chain.beginCycle();
    const port = await freePort();
    const d2 = await startDaemon({
      chains: [{ id: 'replica', layers: c2.layers }],
      nbd: {
        listen: { type: 'inet', host: '127.0.0.1', port },
        tls: { dir: pki.server, clientIdentity: 'CN=mamori-peer' },
      },
      exports: [{ id: 'replica', node: 'replica', writable: true }],
    });
    await d2.qmp().close();
    await assert.rejects(
      startDaemon({ chains: [] }),
      (e) => isMamoriError(e, 'DISK_IN_USE'),
      'a second daemon on the same sockets is refused',
    );
    const again = await StorageDaemon.attach({ qmpSocket: d2.qmpSocket, pidFile: d2.pidFile });
    daemons.push(again);
    assert.equal(again.pid, d2.pid);
    assert.deepEqual(await again.exportIds(), ['replica']);
    const plain = await qemuIo(
      ['--image-opts', `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=replica`],
      ['read 0 4k'],
    );
    assert.equal(plain.code, 1, 'a client without TLS is refused');
    const tlsAs = (certDir: string): string[] => [
      '--object',
      `tls-creds-x509,id=tls0,dir=${certDir},endpoint=client`,
      '--image-opts',
      `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=replica,tls-creds=tls0`,
    ];
    const tls = tlsAs(pki.client);
    assert.equal(
      (await qemuIo(tlsAs(pki.intruder), ['read 0 4k'])).code,
      1,
      'a certificate from the same CA but another identity is refused',
    );
    const w = await qemuIo(tls, ['write -P 0x22 1056k 64k', 'flush']);
    assert.equal(w.code, 0, w.stderr);
    await expectWrite(0x22, 1056 * KiB, 64 * KiB);
    assert.equal(await again.stop(), true);
    const p2 = await chain.commitCycle({ time: '2026-01-01T00:01:00.000Z', consistency: 'application' });
    await copyFile(live(), expected(2));
    await assertReads(p2.layers, expected(2));
    await assertReads(p1.layers, expected(1)); // the older point is unchanged
    assert.deepEqual(
      chain.points().map((p) => [p.id, p.consistency, p.time]),
      [
        ['p000001', 'crash', '2026-01-01T00:00:00.000Z'],
        ['p000002', 'application', '2026-01-01T00:01:00.000Z'],
      ],
    );
  });

  it('a cycle cut by kill -9 of the daemon leaves the newest point intact; the next attempt discards the staging overlay', async () => {
    const chain = await ReplicaChain.open(replicaDir);
    const c3 = await chain.beginCycle();
    const sock = join(dir, 'replica.nbd');
    const d = await startDaemon({
      chains: [{ id: 'replica', layers: c3.layers }],
      nbd: { listen: { type: 'unix', path: sock } },
      exports: [{ id: 'replica', node: 'replica', writable: true }],
    });
    // A writer that is cut in the middle of its cycle: one write lands, then the daemon dies.
    // stdbuf: qemu-io's stdout is block-buffered on a pipe; we wait for its first line.
    const writer = spawn(
      'stdbuf',
      [
        '-oL',
        'qemu-io',
        ...unixTarget(sock, 'replica'),
        '-c',
        'write -P 0x33 0 64k',
        '-c',
        'sleep 10000',
        '-c',
        'write -P 0x34 64k 64k',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const writerDone = new Promise<void>((r) => writer.on('close', () => r()));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('qemu-io wrote nothing within 10 s')), 10_000);
        writer.stdout.setEncoding('utf8').on('data', (c: string) => {
          if (c.includes('wrote 65536/65536')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      await d.kill();
    } finally {
      if (writer.exitCode === null && writer.signalCode === null && writer.pid !== undefined)
        process.kill(writer.pid, 'SIGKILL');
      await writerDone;
    }
    await access(c3.file); // the cut cycle's staging is still there...
    const reopened = await ReplicaChain.open(replicaDir); // ...as after a server restart
    assert.deepEqual(
      reopened.points().map((p) => p.id),
      ['p000001', 'p000002'],
    );
    await assertReads(reopened.newestPoint()!.layers, expected(2));

    const c4 = await reopened.beginCycle();
    assert.equal(c4.parentPointId, 'p000002');
    const map = await runProcess('qemu-img', ['map', '--output=json', chainImageSpec(c4.layers)]);
    const inTop = (JSON.parse(map.stdout) as { depth: number; data: boolean }[]).filter((e) => e.depth === 0 && e.data);
    assert.deepEqual(inTop, [], "the new staging overlay starts empty: the cut cycle's writes are gone");
    assert.deepEqual(
      (await readdir(replicaDir)).filter((f) => f.startsWith('staging-')),
      [c4.file.slice(replicaDir.length + 1)],
    );

    const d4 = await startDaemon({
      chains: [{ id: 'replica', layers: c4.layers }],
      nbd: { listen: { type: 'unix', path: sock } },
      exports: [{ id: 'replica', node: 'replica', writable: true }],
    });
    assert.equal((await qemuIo(unixTarget(sock, 'replica'), ['write -P 0x35 2M 64k', 'flush'])).code, 0);
    await expectWrite(0x35, 2 * MiB, 64 * KiB);
    await d4.stop();
    const p3 = await reopened.commitCycle({ time: '2026-01-01T00:02:00.000Z', consistency: 'crash' });
    assert.equal(p3.id, 'p000003', 'the cut cycle never became a point; its number is taken by this one');
    await copyFile(live(), expected(3));
    await assertReads(p3.layers, expected(3));
  });

  it('retention merges the oldest points into the base without changing what the others read', async () => {
    const chain = await ReplicaChain.open(replicaDir);
    const [p1, p2, p3] = chain.points();
    assert.ok(p1 && p2 && p3);

    // A test recovery holds the newest point: it reads it through a read-only daemon; retention waits.
    const lease = chain.openPointReadOnly(p3.id);
    const sock = join(dir, 'verify.nbd');
    const v = await startDaemon({
      chains: [{ id: 'verify', layers: lease.layers, readOnly: true }],
      nbd: { listen: { type: 'unix', path: sock } },
      exports: [{ id: 'verify', node: 'verify' }],
    });
    assert.equal(
      (await qemuIo(['-r', ...unixTarget(sock, 'verify')], ['read -P 0x35 2M 64k', 'read -P 0x22 1056k 64k'])).code,
      0,
    );
    assert.deepEqual(await chain.applyRetention(2, offlineMerge), { merged: [], deferred: true });
    await v.stop();
    lease.release();

    // A merge cut after its first step (the commit into the base) changes nothing any point reads.
    await runProcess('qemu-img', ['commit', '-q', '-d', chainImageSpec(p1.layers)]);
    await assertReads(p1.layers, expected(1));
    await assertReads(p2.layers, expected(2));
    await assertReads(p3.layers, expected(3));

    assert.deepEqual(await chain.applyRetention(2, offlineMerge), { merged: ['p000001'], deferred: false });
    assert.deepEqual(
      chain.points().map((p) => p.id),
      ['p000002', 'p000003'],
    );
    await assert.rejects(access(p1.file), 'merged point file deleted');
    await assertReads(chain.point('p000002').layers, expected(2));
    await assertReads(chain.point('p000003').layers, expected(3));
    const header = await runProcess('qemu-img', ['info', '--output=json', p2.file]);
    assert.equal((JSON.parse(header.stdout) as { 'backing-filename': string })['backing-filename'], 'base.qcow2');
    // The point files also read right through their own headers.
    const viaHeaders = await runProcess('qemu-img', ['compare', '-f', 'raw', expected(3), p3.file], {
      okCodes: [0, 1],
    });
    assert.equal(viaHeaders.code, 0, viaHeaders.stdout);

    assert.deepEqual(await chain.applyRetention(1, offlineMerge), { merged: ['p000002'], deferred: false });
    const reopened = await ReplicaChain.open(replicaDir);
    assert.deepEqual(
      reopened.points().map((p) => [p.id, p.layers.length]),
      [['p000003', 2]],
    );
    await assertReads(reopened.newestPoint()!.layers, expected(3));
    assert.deepEqual((await readdir(replicaDir)).sort(), ['base.qcow2', 'manifest.json', 'p000003.qcow2']);
  });

  it('withdraws the newest point (a multi-disk commit cut halfway) and reads as the point below', async () => {
    const chain = await ReplicaChain.open(replicaDir);
    const below = chain.newestPoint()!;
    const staging = await chain.beginCycle();
    const sock = join(dir, 'withdraw.nbd');
    const d = await startDaemon({
      chains: [{ id: 'replica', layers: staging.layers }],
      nbd: { listen: { type: 'unix', path: sock } },
      exports: [{ id: 'replica', node: 'replica', writable: true }],
    });
    assert.equal((await qemuIo(unixTarget(sock, 'replica'), ['write -P 0x77 0 64k', 'flush'])).code, 0);
    await d.stop();
    await assert.rejects(
      chain.withdrawNewestPoint(below.id),
      (e) => isMamoriError(e, 'DISK_IN_USE'),
      'not while a cycle is open',
    );
    const unrecorded = await chain.commitCycle({ time: '2026-01-01T00:03:00.000Z', consistency: 'crash' });
    await assert.rejects(
      chain.withdrawNewestPoint(below.id),
      (e) => isMamoriError(e, 'VM_INVALID_STATE'),
      'only the newest',
    );
    await chain.withdrawNewestPoint(unrecorded.id);
    const reopened = await ReplicaChain.open(replicaDir);
    assert.deepEqual(
      reopened.points().map((p) => p.id),
      [below.id],
    );
    await assertReads(reopened.newestPoint()!.layers, expected(3));
    await assert.rejects(access(unrecorded.file), 'the withdrawn point file is deleted');
  });

  it('a chain seeded from an old disk (reprotect) reads as the seed until cycles write, and retention keeps it so', async () => {
    const seedDir = join(dir, 'seeded');
    const seed = join(dir, 'old-disk.raw');
    const want = join(dir, 'seeded-expected.raw');
    await runProcess('qemu-img', ['create', '-q', '-f', 'raw', seed, String(SIZE)]);
    assert.equal((await qemuIo(['-f', 'raw', seed], ['write -P 0x51 0 1M'])).code, 0);
    await runProcess('cp', [seed, want]);
    const chain = await ReplicaChain.create(seedDir, { virtualSize: SIZE, seed: [{ file: seed, format: 'raw' }] });
    // Staging starts from the seed: the first cycle finds the old disk's data already there.
    const c = await chain.beginCycle();
    assert.deepEqual(
      c.layers.map((l) => l.format),
      ['raw', 'qcow2', 'qcow2'],
    );
    await assertReads(c.layers, want);
    assert.equal((await qemuIo([chainImageSpec(c.layers)], ['write -P 0x52 512k 64k'])).code, 0);
    assert.equal((await qemuIo(['-f', 'raw', want], ['write -P 0x52 512k 64k'])).code, 0);
    await chain.commitCycle({ time: new Date().toISOString(), consistency: 'crash' });
    await chain.beginCycle();
    await chain.commitCycle({ time: new Date().toISOString(), consistency: 'crash' });
    assert.deepEqual(await chain.applyRetention(1, offlineMerge), { merged: ['p000001'], deferred: false });
    const reopened = await ReplicaChain.open(seedDir);
    await assertReads(reopened.newestPoint()!.layers, want);
    assert.equal(reopened.newestPoint()!.layers[0]!.file, seed, 'the seed stays the bottom layer, where it is');
    // The seed itself is never written.
    const s2 = await qemuIo(['-f', 'raw', '-r', seed], ['read -P 0x51 512k 64k']);
    assert.equal(s2.code, 0, s2.stdout);
  });

  it('compaction absorbs a two-layer seed into the base: every point reads the same, the chain stops reading the seed, a redone absorb is harmless', async () => {
    const seedDir = join(dir, 'absorbed');
    const oldRaw = join(dir, 'abs-old.raw');
    const oldTop = join(dir, 'abs-old-top.qcow2');
    const want = join(dir, 'abs-expected.raw');
    await runProcess('qemu-img', ['create', '-q', '-f', 'raw', oldRaw, String(SIZE)]);
    assert.equal((await qemuIo(['-f', 'raw', oldRaw], ['write -P 0x61 0 1M'])).code, 0);
    await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', oldRaw, '-F', 'raw', oldTop]);
    assert.equal((await qemuIo(['-f', 'qcow2', oldTop], ['write -P 0x62 768k 512k'])).code, 0);
    await runProcess('qemu-img', ['convert', '-O', 'raw', oldTop, want]);
    const seed: ChainLayer[] = [
      { file: oldRaw, format: 'raw' },
      { file: oldTop, format: 'qcow2' },
    ];
    const chain = await ReplicaChain.create(seedDir, { virtualSize: SIZE, seed });
    const c = await chain.beginCycle();
    assert.equal((await qemuIo([chainImageSpec(c.layers)], ['write -P 0x63 2M 64k'])).code, 0);
    assert.equal((await qemuIo(['-f', 'raw', want], ['write -P 0x63 2M 64k'])).code, 0);
    await chain.commitCycle({ time: new Date().toISOString(), consistency: 'crash' });
    assert.equal((await chain.storage()).layers, 4);

    const absorbed = await chain.absorbSeed();
    assert.deepEqual(absorbed, seed);
    assert.deepEqual(chain.seedLayers(), { current: [], released: seed });
    const reopened = await ReplicaChain.open(seedDir);
    assert.equal(reopened.newestPoint()!.layers.length, 2, 'base + the point, nothing under');
    // The seed files go (as their owner would delete them): the chain reads the same without them.
    await rm(oldTop);
    await rm(oldRaw);
    await assertReads(reopened.newestPoint()!.layers, want);
    const st = await reopened.storage();
    assert.equal(st.layers, 2);
    assert.equal(st.seedBytes, 0);
    assert.equal(await reopened.absorbSeed(), null, 'nothing left to absorb');
    await reopened.seedReleased();
    assert.deepEqual((await ReplicaChain.open(seedDir)).seedLayers(), { current: [], released: [] });
  });
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createServer, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { StorageDaemon } from '../../../src/qemu/storage-daemon.js';
import { SiteProcess } from '../../harness/site-process.js';
import { mbrRhel6 } from '../../harness/disk-fixtures.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { CompatibilityReport } from '../../../src/convert/conversion-service.js';
import type { ConvertResult } from '../../../src/convert/conversion-job.js';
import type { InspectionReport } from '../../../src/inspect/inspector.js';

/*
 * Any NBD server as a source, as qemu-img and virt-v2v take one: the RHEL 6 fixture served by
 * qemu-nbd on loopback TCP and on a unix socket, and by qemu-storage-daemon with TLS
 * (verify-peer), is inspected (`mamori inspect URI`, local) and converted by a site; the VM's
 * disk equals the served bytes (qemu-img compare). The compatibility report comes first, and
 * alone with --check. Windows dynamic disks (MBR type 0x42, GPT LDM partitions) are blockers.
 * A socket outside the site's allow-list, and an odd URI, are refused before any connection.
 */
let site: SiteProcess;
let dir: string;
let fixture: string;
let pki: string;
let socket: string;
let tcpPort: number;
let tlsPort: number;
let daemon: StorageDaemon | null = null;
const children: ChildProcess[] = [];
const dynamic: Record<'mbr' | 'gpt', string> = { mbr: '', gpt: '' };

const openssl = (cwd: string, ...args: string[]): Promise<unknown> =>
  runProcess('openssl', args, { cwd, timeoutMs: 30_000 });
async function makeCa(d: string): Promise<void> {
  await openssl(
    d,
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca-cert.pem',
    '-days',
    '2',
    '-subj',
    '/CN=test-ca',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  );
}
async function makeCert(d: string, name: string, cn: string, ext: string[]): Promise<void> {
  await openssl(
    d,
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    `${name}-key.pem`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${cn}`,
  );
  await writeFile(
    join(d, `${name}.ext`),
    `${['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...ext].join('\n')}\n`,
  );
  await openssl(
    d,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca-cert.pem',
    '-CAkey',
    'ca-key.pem',
    '-CAcreateserial',
    '-out',
    `${name}-cert.pem`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  );
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function until(what: string, ok: () => Promise<boolean>, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await ok())) {
    if (child?.exitCode !== null && child?.exitCode !== undefined)
      throw new Error(`${what}: the server exited (${child.exitCode})`);
    if (Date.now() > deadline) throw new Error(`${what} did not happen within 20 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const listening = (port: number) => () =>
  new Promise<boolean>((r) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.destroy();
      r(true);
    });
    s.once('error', () => r(false));
  });
const isSocket = (p: string) => () =>
  stat(p).then(
    (s) => s.isSocket(),
    () => false,
  );

/** qemu-nbd serving `image` read-only (raw), persistent, until the test ends. */
async function qemuNbd(image: string, listen: string[], ready: () => Promise<boolean>): Promise<void> {
  const child = spawn(
    'qemu-nbd',
    ['--read-only', '--persistent', '--shared=8', '-f', 'raw', '-x', 'disk', ...listen, image],
    { stdio: 'ignore' },
  );
  children.push(child);
  await until(`qemu-nbd on ${listen.join(' ')}`, ready, child);
}

async function sfdiskImage(path: string, sizeMiB: number, script: string): Promise<string> {
  await writeFile(path, '');
  await truncate(path, sizeMiB * 1024 * 1024);
  await runProcess('sfdisk', ['-q', path], { input: script, timeoutMs: 30_000 });
  return path;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-nbd-source-test-'));
  fixture = await mbrRhel6(dir);
  // Windows dynamic disks as Disk Management leaves them: MBR type 0x42 over the disk, or on
  // GPT the LDM metadata partition and an LDM data partition (type GUIDs from Microsoft's docs).
  dynamic.mbr = await sfdiskImage(join(dir, 'dynamic-mbr.img'), 16, 'label: dos\nstart=2048, type=42\n');
  dynamic.gpt = await sfdiskImage(
    join(dir, 'dynamic-gpt.img'),
    16,
    'label: gpt\nstart=2048, size=2048, type=5808C8AA-7E8F-42E0-85D2-E1E90434CFB3, name="LDM metadata partition"\n' +
      'start=4096, type=AF9B60A0-1431-4F62-BC68-3311714A69AD, name="LDM data partition"\n',
  );
  pki = join(dir, 'pki');
  await mkdir(pki);
  // One folder in QEMU's tls-creds-x509 layout serves both ends: the daemon reads server-*, mamori client-*.
  await makeCa(pki);
  await makeCert(pki, 'server', 'localhost', [
    'extendedKeyUsage=serverAuth',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ]);
  await makeCert(pki, 'client', 'mamori-client', ['extendedKeyUsage=clientAuth']);

  socket = join(dir, 'nbd.sock');
  await qemuNbd(fixture, ['-k', socket], isSocket(socket));
  tcpPort = await freePort();
  await qemuNbd(fixture, ['-b', '127.0.0.1', '-p', String(tcpPort)], listening(tcpPort));
  const gptSocket = join(dir, 'gpt-ldm.sock');
  await qemuNbd(dynamic.gpt, ['-k', gptSocket], isSocket(gptSocket));
  tlsPort = await freePort();
  await mkdir(join(dir, 'daemon'));
  daemon = await StorageDaemon.start({
    qmpSocket: join(dir, 'daemon', 'qmp.sock'),
    pidFile: join(dir, 'daemon', 'pid'),
    chains: [{ id: 'disk', layers: [{ file: fixture, format: 'raw' }], readOnly: true }],
    nbd: { listen: { type: 'inet', host: '127.0.0.1', port: tlsPort }, tls: { dir: pki, verifyPeer: true } },
    exports: [{ id: 'disk', node: 'disk' }],
  });
  site = await SiteProcess.create('site-nbd');
  await site.start();
});

after(async () => {
  if (site) await site.destroy();
  await daemon?.stop().catch(() => undefined);
  for (const c of children) {
    if (c.exitCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await gone;
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

const uri = {
  unix: () => `nbd+unix:///disk?socket=${socket}`,
  tcp: () => `nbd://127.0.0.1:${tcpPort}/disk`,
  tls: () => `nbds://127.0.0.1:${tlsPort}/disk`,
};

async function sameBytes(vmName: string): Promise<void> {
  const vm = await site.cliJson<VmView>('vm', 'show', vmName);
  const cmp = await runProcess(
    'qemu-img',
    ['compare', '-f', 'raw', '-F', vm.disks[0]!.format, fixture, vm.disks[0]!.path],
    { timeoutMs: 120_000, okCodes: [0, 1] },
  );
  assert.equal(cmp.code, 0, `${vmName}'s disk differs from the served one: ${cmp.stdout}`);
}

test('mamori inspect reads a disk from qemu-nbd over TCP and a unix socket, and from a TLS storage daemon', async () => {
  for (const [source, extra] of [
    [uri.tcp(), []],
    [uri.unix(), []],
    [uri.tls(), ['--tls-creds', pki]],
  ] as const) {
    const r = await site.cli('inspect', source, ...extra, '--json');
    assert.equal(r.code, 0, `${source}: ${r.stderr}`);
    const report = JSON.parse(r.stdout) as InspectionReport & { source: string; kind: string };
    assert.equal(report.kind, 'nbd');
    assert.equal(report.partitionTable, 'mbr');
    assert.equal(report.os.distro, 'rhel');
    assert.equal(report.os.hostname, 'rhel6.example.com');
    assert.equal(report.size, 128 * 1024 * 1024);
  }
  // The URI alone says whether the link is encrypted: no silent plain text, no silent TLS.
  const noCreds = await site.cli('inspect', uri.tls());
  assert.equal(noCreds.code, 2);
  assert.match(noCreds.stderr, /asks for TLS: give the CA .* --tls-creds DIR/);
  const plainToTls = await site.cli('inspect', `nbd://127.0.0.1:${tlsPort}/disk`);
  assert.match(plainToTls.stderr, /requires TLS.*\[NBD_TLS_REQUIRED\]/);
  const odd = await site.cli('inspect', `nbd://127.0.0.1:${tcpPort}/disk?tls-certificates=/etc`);
  assert.match(odd.stderr, /takes no query.*\[NBD_URI_INVALID\]/);
});

test('convert --check prints the compatibility report and copies nothing', async () => {
  const before = await readdir(join(site.dataDir, 'pools', 'default')).catch(() => []);
  const text = await site.cli('convert', uri.unix(), '--check');
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    /^compatibility of nbd\+unix:\/\/\/disk\?socket=.*: can be converted \(guest Red Hat Enterprise Linux Server release 6\.10 \(Santiago\); bios firmware, virtio disk, virtio-net-pci NIC\)$/m,
  );
  const json = await site.cliJson<CompatibilityReport>('convert', uri.tcp(), '--check');
  assert.deepEqual(json.blockers, []);
  assert.equal(json.inspection.os.distro, 'rhel');
  assert.deepEqual((await readdir(join(site.dataDir, 'pools', 'default')).catch(() => [])).sort(), [...before].sort());
});

test('a site converts from qemu-nbd (unix socket, TCP) and from a TLS storage daemon; the disks equal the served bytes', async () => {
  // The report is printed before the copy's progress.
  const unix = await site.cli('convert', uri.unix(), '--name', 'from-unix');
  assert.equal(unix.code, 0, unix.stderr);
  assert.match(unix.stdout, /^compatibility of .*: can be converted/);
  assert.match(unix.stdout, /from-unix: bios firmware/);
  await sameBytes('from-unix');
  const tcp = await site.cliJson<Job & { result: ConvertResult; compatibility: CompatibilityReport }>(
    'convert',
    uri.tcp(),
    '--name',
    'from-tcp',
    '--format',
    'raw',
  );
  assert.equal(tcp.state, 'succeeded', JSON.stringify(tcp.error));
  assert.equal(tcp.result.os.distro, 'rhel');
  assert.deepEqual(tcp.compatibility.blockers, []);
  await sameBytes('from-tcp');
  const tls = await site.cliJson<Job & { result: ConvertResult }>(
    'convert',
    uri.tls(),
    '--tls-creds',
    pki,
    '--name',
    'from-tls',
  );
  assert.equal(tls.state, 'succeeded', JSON.stringify(tls.error));
  await sameBytes('from-tls');
  // The job keeps the URI, never the TLS key.
  assert.doesNotMatch(JSON.stringify(await site.cliJson<Job[]>('job', 'list')), /PRIVATE KEY/);
});

test('Windows dynamic disks (MBR 0x42, GPT LDM) are blockers: --check exits non-zero, convert refuses and leaves nothing', async () => {
  const before = await readdir(join(site.dataDir, 'pools', 'default')).catch(() => []);
  for (const image of [dynamic.mbr, dynamic.gpt]) {
    const check = await site.cli('convert', image, '--check');
    assert.equal(check.code, 1, check.stdout + check.stderr);
    assert.match(check.stdout, /cannot be converted/);
    assert.match(
      check.stdout,
      /^blocker: it is a Windows dynamic disk \(LDM\): convert its volumes to basic disks in Windows first$/m,
    );
    const convert = await site.cli('convert', image, '--name', 'dynamic');
    assert.equal(convert.code, 2);
    assert.match(convert.stderr, /cannot be converted: it is a Windows dynamic disk \(LDM\)/);
  }
  // Served over NBD, the same.
  const served = await site
    .cliJson<CompatibilityReport>('convert', `nbd+unix:///disk?socket=${join(dir, 'gpt-ldm.sock')}`, '--check')
    .catch((e: Error) => e);
  assert.ok(served instanceof Error && /failed \(1\)/.test(served.message), String(served));
  const names = (await site.cliJson<VmView[]>('vm', 'list')).map((v) => v.name);
  assert.ok(!names.includes('dynamic'));
  assert.deepEqual((await readdir(join(site.dataDir, 'pools', 'default')).catch(() => [])).sort(), [...before].sort());
});

test('a socket outside the allow-list or in the data folder, and an odd URI, are refused before any connection', async () => {
  // The site's data folder is never a source, even inside an --allow-import folder.
  const inData = join(site.dataDir, 'nbd-test.sock');
  await qemuNbd(fixture, ['-k', inData], isSocket(inData));
  const r = await site.cli('convert', `nbd+unix:///disk?socket=${inData}`, '--name', 'sneaky');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is not an NBD server socket this site may read from.*\[HOST_PATH_REFUSED\]/);
  const missing = await site.cli('convert', '--check', 'nbd+unix:///disk?socket=/run/no-such.sock');
  assert.match(missing.stderr, /\[HOST_PATH_REFUSED\]/);
  for (const bad of [
    'nbd://user@127.0.0.1/disk',
    `nbd+unix:///disk?socket=${dir}/../x.sock`,
    'nbd+vsock://2:10809/disk',
    'nbd://127.0.0.1:99999/disk',
  ]) {
    const b = await site.cli('convert', bad, '--name', 'bad-uri');
    assert.match(b.stderr, /\[NBD_URI_INVALID\]/, bad);
  }
  assert.ok(!(await site.cliJson<VmView[]>('vm', 'list')).some((v) => ['sneaky', 'bad-uri'].includes(v.name)));
});

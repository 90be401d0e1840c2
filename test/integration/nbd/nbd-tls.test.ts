import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProcess } from '../../../src/core/run-process.js';
import { NbdClient } from '../../../src/nbd/nbd-client.js';
import { isNbdError } from '../../../src/nbd/nbd-error.js';
import type { NbdTlsOptions } from '../../../src/nbd/nbd-handshake.js';

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
const openssl = (cwd: string, ...args: string[]): Promise<unknown> =>
  runProcess('openssl', args, { cwd, timeoutMs: 30_000 });

/** A CA (self-signed) and, signed by it, certificates with the given extensions. */
async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(
    dir,
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    `${name}-key.pem`,
    '-out',
    `${name}-cert.pem`,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  );
}
async function makeCert(dir: string, ca: string, name: string, cn: string, ext: string[]): Promise<void> {
  await openssl(
    dir,
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
    join(dir, `${name}.ext`),
    `${['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...ext].join('\n')}\n`,
  );
  await openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}-cert.pem`,
    '-CAkey',
    `${ca}-key.pem`,
    '-CAcreateserial',
    '-out',
    `${name}-cert.pem`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  );
}

describe('NbdClient with TLS against qemu-nbd (verify-peer=on)', () => {
  let dir: string;
  let pki: string;
  let sock: string;
  let child: ReturnType<typeof spawn> | null = null;
  let exited: Promise<void> = Promise.resolve();
  const file = (name: string): Promise<Buffer> => readFile(join(pki, name));
  const good = async (): Promise<NbdTlsOptions> => ({
    ca: await file('ca-cert.pem'),
    cert: await file('client-cert.pem'),
    key: await file('client-key.pem'),
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-nbd-tls-'));
    pki = join(dir, 'pki');
    await mkdir(pki);
    // the layout qemu's tls-creds-x509 expects: ca-cert.pem, server-cert.pem, server-key.pem
    await makeCa(pki, 'ca');
    await makeCert(pki, 'ca', 'server', 'localhost', [
      'extendedKeyUsage=serverAuth',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    await makeCert(pki, 'ca', 'client', 'mamori-client', ['extendedKeyUsage=clientAuth']);
    await makeCa(pki, 'rogue-ca');
    await makeCert(pki, 'rogue-ca', 'rogue-client', 'mamori-client', ['extendedKeyUsage=clientAuth']);

    const img = join(dir, 'disk.qcow2');
    await runProcess('qemu-img', ['create', '-f', 'qcow2', img, '4M'], { timeoutMs: 30_000 });
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 64k 64k', img], { timeoutMs: 30_000 });
    sock = join(dir, 'tls.sock');
    const proc = spawn(
      'qemu-nbd',
      [
        '--object',
        `tls-creds-x509,id=tls0,dir=${pki},endpoint=server,verify-peer=on`,
        '--tls-creds',
        'tls0',
        '--persistent',
        '--shared=4',
        '-k',
        sock,
        '-r',
        '-f',
        'qcow2',
        '-x',
        'disk',
        img,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child = proc;
    let stderr = '';
    proc.stderr!.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
    });
    exited = new Promise((resolve) =>
      proc.once('exit', () => {
        child = null;
        resolve();
      }),
    );
    const deadline = Date.now() + 15_000; // loading the credentials takes a second or so
    while (
      !(await stat(sock).then(
        (s) => s.isSocket(),
        () => false,
      ))
    ) {
      if (child === null || Date.now() > deadline) throw new Error(`qemu-nbd with TLS did not start: ${stderr}`);
      await delay(25);
    }
  });

  after(async () => {
    const c = child;
    if (c !== null) {
      c.kill('SIGTERM');
      await Promise.race([exited, delay(5000)]);
      if (child !== null) c.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('connects with TLS, verifying the server against the CA and presenting the client certificate', async () => {
    const c = await NbdClient.connect(
      { socketPath: sock },
      { exportName: 'disk', tls: await good(), metaContexts: ['base:allocation'] },
    );
    assert.equal(c.tls, true);
    assert.equal(c.size, 4 * 1024 * 1024);
    assert.deepEqual(await c.read(60 * 1024, 8 * 1024), Buffer.concat([Buffer.alloc(4096), Buffer.alloc(4096, 0x5a)]));
    assert.deepEqual(await c.extents('base:allocation', 0, 256 * 1024), [
      { offset: 0, length: 65536, flags: 3 },
      { offset: 65536, length: 65536, flags: 0 },
      { offset: 131072, length: 131072, flags: 3 },
    ]);
    await c.disconnect();
  });

  it('refuses a server whose certificate is not signed by the given CA', async () => {
    const tls = { ...(await good()), ca: await file('rogue-ca-cert.pem') };
    const err = await NbdClient.connect({ socketPath: sock }, { exportName: 'disk', tls }).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(isNbdError(err, 'NBD_TLS_FAILED'), String(err));
    assert.match(String(err.details?.['tlsError']), /UNABLE_TO_VERIFY|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
  });

  it('refuses a server certificate that does not name the server', async () => {
    const err = await NbdClient.connect(
      { socketPath: sock },
      { exportName: 'disk', tls: { ...(await good()), servername: 'elsewhere.example' } },
    ).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(isNbdError(err, 'NBD_TLS_FAILED'), String(err));
    assert.equal(err.details?.['tlsError'], 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('is refused by the server without a client certificate it trusts', async () => {
    for (const tls of [
      { ca: await file('ca-cert.pem') },
      { ...(await good()), cert: await file('rogue-client-cert.pem'), key: await file('rogue-client-key.pem') },
    ]) {
      const err = await NbdClient.connect({ socketPath: sock }, { exportName: 'disk', tls }).then(
        () => assert.fail('connected'),
        (e: unknown) => e,
      );
      assert.ok(isNbdError(err, 'NBD_TLS_FAILED'), String(err));
    }
  });

  it('gets NBD_TLS_REQUIRED when connecting in plain text', async () => {
    const err = await NbdClient.connect({ socketPath: sock }, { exportName: 'disk' }).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(isNbdError(err, 'NBD_TLS_REQUIRED'), String(err));
    assert.equal(err.details?.['replyType'], 'NBD_REP_ERR_TLS_REQD');
    assert.equal(typeof err.details?.['serverMessage'], 'string');
  });
});

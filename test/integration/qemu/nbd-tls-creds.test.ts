import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureSiteTls } from '../../../src/sites/site-tls.js';
import { writeQemuTlsCreds } from '../../../src/sites/qemu-tls-creds.js';
import { runProcess } from '../../../src/core/run-process.js';

const root = await mkdtemp(join(tmpdir(), 'mamori-nbdtls-'));
const children: number[] = [];
after(async () => {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await rm(root, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Reads the whole export through QEMU's NBD client with these credentials (or none). */
function readExport(port: number, credsDir: string | null, out: string) {
  const opts = `driver=nbd,host=127.0.0.1,port=${port}${credsDir ? ',tls-creds=tls0' : ''}`;
  return runProcess(
    'qemu-img',
    [
      'convert',
      ...(credsDir ? ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${credsDir}`] : []),
      '--image-opts',
      opts,
      '-O',
      'raw',
      out,
    ],
    { timeoutMs: 30_000 },
  );
}

test('QEMU serves and reads NBD over TLS with the credentials dirs, and refuses unpaired or plain clients', async () => {
  const a = await ensureSiteTls({ dir: join(root, 'a'), siteName: 'site-a' });
  const b = await ensureSiteTls({ dir: join(root, 'b'), siteName: 'site-b' });
  const c = await ensureSiteTls({ dir: join(root, 'c'), siteName: 'site-c' });
  const serverDir = await writeQemuTlsCreds({
    dir: join(root, 'a-serves-b'),
    site: a,
    peerCaPem: b.caCertPem,
    endpoint: 'server',
  });
  const bClient = await writeQemuTlsCreds({
    dir: join(root, 'b-reads-a'),
    site: b,
    peerCaPem: a.caCertPem,
    endpoint: 'client',
  });
  const cClient = await writeQemuTlsCreds({
    dir: join(root, 'c-reads-a'),
    site: c,
    peerCaPem: a.caCertPem,
    endpoint: 'client',
  });
  const bTrustsC = await writeQemuTlsCreds({
    dir: join(root, 'b-trusts-c'),
    site: b,
    peerCaPem: c.caCertPem,
    endpoint: 'client',
  });

  const image = join(root, 'disk.raw');
  const data = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i ^ 0x5a5a5a5a, i);
  await writeFile(image, data);

  const port = await freePort();
  const nbd = spawn(
    'qemu-nbd',
    [
      '--object',
      `tls-creds-x509,id=tls0,endpoint=server,dir=${serverDir},verify-peer=on`,
      '--tls-creds',
      'tls0',
      '-b',
      '127.0.0.1',
      '-p',
      String(port),
      '-f',
      'raw',
      '-r',
      '-t',
      image,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.push(nbd.pid!);
  let stderr = '';
  nbd.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));

  // The paired peer reads the bytes (retrying while qemu-nbd comes up).
  const out = join(root, 'copy.raw');
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await readExport(port, bClient, out);
      break;
    } catch (e) {
      if (nbd.exitCode !== null) assert.fail(`qemu-nbd exited: ${stderr}`);
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  assert.ok((await readFile(out)).equals(data));

  await assert.rejects(
    readExport(port, cClient, join(root, 'c.raw')),
    'a site whose CA the server does not hold is refused',
  );
  await assert.rejects(readExport(port, null, join(root, 'plain.raw')), 'a client without TLS is refused');
  await assert.rejects(
    readExport(port, bTrustsC, join(root, 'wrong-ca.raw')),
    'a client that pins another CA refuses the server',
  );
});

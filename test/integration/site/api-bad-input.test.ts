import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSite, type Site } from '../../../src/main.js';
import { runProcess } from '../../../src/core/run-process.js';
import { OpenApiCheck } from '../../harness/openapi-check.js';
import { runCli } from '../../harness/site-process.js';

let site: Site;
let dir: string;
let token: string;
let api: OpenApiCheck;
let url: string;

before(async () => {
  process.env['MAMORI_ACCEL'] = 'tcg';
  dir = await mkdtemp(join(tmpdir(), 'mamori-api-'));
  site = await openSite({ dataDir: join(dir, 'data'), name: 'api-test', hostPaths: { importDirs: [dir] } });
  token = (await readFile(site.paths.adminToken, 'utf8')).trim();
  const doc = (await site.app.inject({ method: 'GET', url: '/openapi.json' })).json();
  api = new OpenApiCheck(doc);
  url = await site.listen('127.0.0.1', 0);
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

/** Injects a request with the admin token and checks the answer against the OpenAPI document. */
async function call(
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  route: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await site.app.inject({
    method,
    url: path,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const json = res.body ? (res.json() as { error?: { code: string; message: string } }) : undefined;
  api.check(method, route, res.statusCode, json);
  return {
    status: res.statusCode,
    json: json as { error: { code: string; message: string } } & Record<string, unknown>,
  };
}

/** Follows an import job through GET /jobs/{id} until it ends. */
async function jobEnd(first: unknown): Promise<{ id: string; state: string; progress: number }> {
  let job = first as { id: string; state: string; progress: number };
  while (job.state === 'running') {
    await new Promise((r) => setTimeout(r, 100));
    job = (await call('GET', `/jobs/${job.id}`, '/jobs/{id}')).json as unknown as typeof job;
  }
  return job;
}

async function vmNames(): Promise<string[]> {
  return ((await call('GET', '/vms', '/vms')).json as unknown as { name: string }[]).map((v) => v.name);
}

async function poolFiles(): Promise<string[]> {
  return readdir(join(dir, 'data', 'pools', 'default')).catch(() => []);
}

test('the admin token was written once with mode 0600 and only its hash is stored', async () => {
  const st = await stat(site.paths.adminToken);
  assert.equal(st.mode & 0o777, 0o600);
  const db = await readFile(site.paths.database);
  assert.ok(!db.includes(Buffer.from(token)), 'clear token must not be in the database');
});

test('a missing or wrong token gets 401', async () => {
  const none = await site.app.inject({ method: 'GET', url: '/vms' });
  assert.equal(none.statusCode, 401);
  assert.equal(none.json().error.code, 'UNAUTHORIZED');
  const wrong = await site.app.inject({
    method: 'GET',
    url: '/vms',
    headers: { authorization: 'Bearer mamori_wrong' },
  });
  assert.equal(wrong.statusCode, 401);
  api.check('GET', '/vms', 401, wrong.json());
});

test('an unknown VM is a 404 naming it', async () => {
  const r = await call('GET', '/vms/nope', '/vms/{name}');
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'VM_NOT_FOUND');
  assert.match(r.json.error.message, /nope/);
});

test('malformed JSON is a 400 and creates nothing', async () => {
  const r = await call('POST', '/vms', '/vms', '{"name": "x",');
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'MALFORMED_JSON');
  assert.deepEqual(await vmNames(), []);
});

test('memory, vCPUs or a test-guest setting out of range are refused and leave no VM, disk or file', async () => {
  for (const body of [
    { name: 'big', memoryMiB: 16 },
    { name: 'big', vcpus: 0 },
    { name: 'big', vcpus: 1000 },
    { name: 'big', memoryMiB: 1.5 },
    { name: 'big', testGuest: true, writelogPayload: 'zip' },
    { name: 'big', writelogPayload: 'text' },
  ]) {
    const r = await call('POST', '/vms', '/vms', { ...body, dataDisk: '8M' });
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.ok(['OUT_OF_RANGE', 'INVALID_INPUT'].includes(r.json.error.code), r.json.error.code);
  }
  assert.deepEqual(await vmNames(), []);
  assert.deepEqual(await poolFiles(), []);
  assert.deepEqual((await call('GET', '/disks', '/disks')).json, []);
});

test('a duplicate VM name is a 409 and the first VM is unchanged', async () => {
  const first = await call('POST', '/vms', '/vms', { name: 'dup', dataDisk: '8M', memoryMiB: 128 });
  assert.equal(first.status, 201);
  const second = await call('POST', '/vms', '/vms', { name: 'dup', memoryMiB: 512 });
  assert.equal(second.status, 409);
  assert.equal(second.json.error.code, 'VM_EXISTS');
  const vm = await call('GET', '/vms/dup', '/vms/{name}');
  assert.equal(vm.json['memoryMiB'], 128);
  assert.deepEqual(await poolFiles(), ['dup-data.qcow2']);
  const del = await call('DELETE', '/vms/dup', '/vms/{name}');
  assert.equal(del.status, 204);
  assert.deepEqual(await poolFiles(), [], 'the data disk made for the VM goes with it');
});

test('invalid names are refused', async () => {
  for (const name of ['../etc', 'a/b', '.hidden', '']) {
    const r = await call('POST', '/vms', '/vms', { name });
    assert.equal(r.status, 400, name);
    assert.equal(r.json.error.code, 'INVALID_NAME');
  }
});

test('a disk path outside the storage pool or through .. is refused and no file appears', async () => {
  for (const path of ['/tmp/evil.qcow2', '../evil.qcow2', 'sub/../../evil.qcow2']) {
    const r = await call('POST', '/disks', '/disks', { name: 'evil', size: '8M', path });
    assert.equal(r.status, 400, path);
    assert.equal(r.json.error.code, 'PATH_OUTSIDE_POOL');
    assert.match(r.json.error.message, /pool/);
  }
  await assert.rejects(stat('/tmp/evil.qcow2'));
  await assert.rejects(stat(join(dir, 'data', 'pools', 'evil.qcow2')));
  assert.deepEqual((await call('GET', '/disks', '/disks')).json, []);
});

test('a missing image, a folder and a forbidden host file get one and the same answer', async () => {
  // The API must not tell a caller which host paths exist (issue 18): missing and forbidden alike.
  const answers = [];
  await mkdir(join(dir, 'a-folder.vmdk'));
  for (const source of [
    join(dir, 'missing.vmdk'),
    join(dir, 'a-folder.vmdk'),
    '/etc/shadow',
    '/etc/./shadow',
    '//etc/hostname',
  ]) {
    const r = await call('POST', '/disks/import', '/disks/import', { name: 'm', source });
    assert.equal(r.status, 403, source);
    assert.equal(r.json.error.code, 'HOST_PATH_REFUSED');
    answers.push(r.json.error.message.replace(JSON.stringify(source), 'PATH'));
  }
  assert.equal(new Set(answers).size, 1, `one answer for all: ${answers.join(' | ')}`);
  assert.deepEqual(await poolFiles(), []);
});

test('a truncated VMDK is refused before anything is written, a whole one imports with progress to done', async () => {
  const raw = join(dir, 'src.raw');
  await runProcess('qemu-img', ['create', '-q', '-f', 'raw', raw, '8M']);
  await writeFile(raw, Buffer.alloc(4 * 1024 * 1024, 0xab), { flag: 'r+' });
  const vmdk = join(dir, 'whole.vmdk');
  await runProcess('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=monolithicSparse', raw, vmdk]);
  const bytes = await readFile(vmdk);
  const truncated = join(dir, 'truncated.vmdk');
  await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));

  const bad = await call('POST', '/disks/import', '/disks/import', { name: 'trunc', source: truncated });
  assert.equal(bad.status, 422);
  assert.equal(bad.json.error.code, 'IMAGE_CORRUPT');
  assert.deepEqual(await poolFiles(), []);
  assert.deepEqual((await call('GET', '/disks', '/disks')).json, []);

  const ok = await call('POST', '/disks/import', '/disks/import', { name: 'whole', source: vmdk });
  assert.equal(ok.status, 202);
  const job = await jobEnd(ok.json);
  assert.equal(job.state, 'succeeded');
  assert.equal(job.progress, 1);
  const disk = (await call('GET', '/disks/whole', '/disks/{name}')).json as unknown as {
    path: string;
    format: string;
    sizeBytes: number;
  };
  assert.equal(disk.format, 'qcow2');
  assert.equal(disk.sizeBytes, 8 * 1024 * 1024);
  // Same bytes as the source, read back through QEMU.
  await runProcess('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', raw, disk.path]);
  assert.deepEqual(await poolFiles(), ['whole.qcow2'], 'no temporary file is left');
  const dup = await call('POST', '/disks/import', '/disks/import', { name: 'whole', source: vmdk });
  assert.equal(dup.status, 409);

  // The other hypervisors' formats: VHD (Hyper-V gen 1, qemu's "vpc"), VHDX, streamOptimized VMDK.
  const others: [string, string, string[]][] = [
    ['hv1', 'src.vhd', ['-O', 'vpc', '-o', 'force_size=on']],
    ['hv2', 'src.vhdx', ['-O', 'vhdx']],
    ['esx', 'src-stream.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']],
  ];
  for (const [name, file, opts] of others) {
    await runProcess('qemu-img', ['convert', '-f', 'raw', ...opts, raw, join(dir, file)]);
    const started = await call('POST', '/disks/import', '/disks/import', { name, source: join(dir, file) });
    assert.equal(started.status, 202, `${file}: ${JSON.stringify(started.json)}`);
    assert.equal((await jobEnd(started.json)).state, 'succeeded', file);
    const d = (await call('GET', `/disks/${name}`, '/disks/{name}')).json as unknown as { path: string };
    await runProcess('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', raw, d.path]);
  }
});

test('a shared disk must be an RDM', async () => {
  const r = await call('POST', '/disks', '/disks', { name: 'sh', size: '8M', shared: true });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'SHARED_DISK_NOT_RDM');
});

test('the CLI prints one clear line and exits non-zero on errors', async () => {
  const env = {
    ...process.env,
    MAMORI_URL: url,
    MAMORI_TOKEN: token,
    MAMORI_CA: join(site.paths.tlsDir, 'ca-cert.pem'),
  };
  const untrusted = await runCli(['vm', 'list'], { ...env, MAMORI_CA: '' });
  assert.equal(untrusted.code, 1);
  assert.match(untrusted.stderr, /not trusted: use --data DIR, or set MAMORI_CA.*\[SITE_UNREACHABLE\]/);
  const unknown = await runCli(['vm', 'show', 'ghost'], env);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr.trim().split('\n').length, 1);
  assert.match(unknown.stderr, /no VM named "ghost".*\[VM_NOT_FOUND\]/);
  const badToken = await runCli(['vm', 'list'], { ...env, MAMORI_TOKEN: 'nope' });
  assert.equal(badToken.code, 1);
  assert.match(badToken.stderr, /\[UNAUTHORIZED\]/);
  const noSite = await runCli(['vm', 'list'], { ...process.env, MAMORI_URL: '', MAMORI_TOKEN: '' });
  assert.equal(noSite.code, 2);
  assert.match(noSite.stderr, /--data DIR.*MAMORI_URL/);
  const range = await runCli(['vm', 'create', 'x', '--vcpus', '99999'], env);
  assert.match(range.stderr, /vcpus must be a whole number from 1 to 64.*\[OUT_OF_RANGE\]/);
  const json = await runCli(['vm', 'show', 'ghost', '--json'], env);
  assert.equal(JSON.parse(json.stdout).error.code, 'VM_NOT_FOUND');
});

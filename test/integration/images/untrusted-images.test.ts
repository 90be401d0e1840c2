import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSite, type Site } from '../../../src/main.js';
import { runProcess } from '../../../src/core/run-process.js';
import { buildOvf } from '../../../src/convert/ovf-descriptor.js';
import { writeTar } from '../../../src/convert/ova-archive.js';
import { openSource } from '../../../src/inspect/image-source.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { OpenApiCheck } from '../../harness/openapi-check.js';
import { LoopDevice } from '../../harness/loop-device.js';
import {
  MARKER,
  markerFile,
  markerUnder,
  qcow2WithBacking,
  qcow2WithDataFile,
  qcow2WithJsonBacking,
  splitVmdk,
  vhdxWithParent,
  vmdkWithFlatExtent,
} from '../../harness/untrusted-image-fixtures.js';

/*
 * Images from outside the site (issue 18): each hostile image names a host file full of a
 * marker (a qcow2 backing file, plain or json:, an external data file, a VMDK extent by absolute
 * path or through ../, a VHDX parent, an OVF disk outside its package). Import, inspection and
 * conversion refuse each with IMAGE_UNSAFE_REFERENCE, and no marker byte reaches the site's
 * data folder or an answer. Self-contained images (qcow2, monolithicSparse, a split VMDK in its
 * own folder, VHDX) still import equal to their source and inspect.
 */
let site: Site;
let dir: string;
let secret: string;
let token: string;
let api: OpenApiCheck;

before(async () => {
  process.env['MAMORI_ACCEL'] = 'tcg';
  dir = await mkdtemp(join(tmpdir(), 'mamori-untrusted-'));
  secret = await markerFile(join(dir, 'host-secret.bin'));
  // The marker file sits in the exchange folder itself: the image's reference is what is refused.
  site = await openSite({ dataDir: join(dir, 'data'), name: 'untrusted-test', hostPaths: { importDirs: [dir] } });
  token = (await readFile(site.paths.adminToken, 'utf8')).trim();
  api = new OpenApiCheck((await site.app.inject({ method: 'GET', url: '/openapi.json' })).json());
});
after(async () => {
  await site.close();
  await rm(dir, { recursive: true, force: true });
});

async function call(route: '/disks/import' | '/inspections' | '/conversions', body: unknown) {
  const res = await site.app.inject({
    method: 'POST',
    url: route,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    payload: JSON.stringify(body),
  });
  const json = res.json() as { error?: { code: string; message: string } } & Record<string, unknown>;
  api.check('POST', route, res.statusCode, json);
  return { status: res.statusCode, json, body: res.body };
}

async function jobEnd(id: string): Promise<{ state: string; error?: { code: string } }> {
  for (;;) {
    const j = (
      await site.app.inject({ method: 'GET', url: `/jobs/${id}`, headers: { authorization: `Bearer ${token}` } })
    ).json() as { state: string };
    if (j.state !== 'running') return j;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Import, inspection (API and the CLI's openSource) and conversion each refuse `source` with the code; no marker anywhere. */
let attempt = 0;
async function assertRefused(source: string, what: RegExp): Promise<void> {
  const imported = await call('/disks/import', { name: `hostile-${++attempt}`, source });
  assert.equal(imported.status, 422, `import of ${source}: ${imported.body.slice(0, 400)}`);
  assert.equal(imported.json.error?.code, 'IMAGE_UNSAFE_REFERENCE', imported.body);
  assert.match(imported.json.error!.message, what);
  assert.ok(!imported.body.includes(MARKER));
  const inspected = await call('/inspections', { source });
  assert.equal(inspected.status, 422, `inspection of ${source}: ${inspected.body.slice(0, 400)}`);
  assert.equal(inspected.json.error?.code, 'IMAGE_UNSAFE_REFERENCE');
  assert.ok(!inspected.body.includes(MARKER));
  await assert.rejects(openSource(source), (e: unknown) => isMamoriError(e, 'IMAGE_UNSAFE_REFERENCE'));
  await assertNoMarker();
}

async function assertNoMarker(): Promise<void> {
  assert.deepEqual(await markerUnder(join(dir, 'data')), [], 'no marker byte reached the site');
}

test('a qcow2 whose backing file is a host file is refused; its bytes are not copied', async () => {
  await assertRefused(
    await qcow2WithBacking(join(dir, 'backed.qcow2'), secret),
    /backing file ".*host-secret\.bin".*flatten it/,
  );
});

test('a qcow2 whose backing is a json: description of a host file is refused', async () => {
  await assertRefused(await qcow2WithJsonBacking(join(dir, 'json-backed.qcow2'), secret), /backing file "json:/);
});

test('a qcow2 with an external data file is refused', async () => {
  await assertRefused(
    await qcow2WithDataFile(join(dir, 'data-file.qcow2'), join(dir, 'outside-data.bin')),
    /external data file ".*outside-data\.bin"/,
  );
});

test('a VMDK descriptor whose FLAT extent is an absolute host path is refused', async () => {
  await assertRefused(await vmdkWithFlatExtent(join(dir, 'abs-flat.vmdk'), secret), /extent file ".*host-secret\.bin"/);
});

test('a VMDK descriptor whose FLAT extent climbs out with ../ is refused', async () => {
  await mkdir(join(dir, 'sub'));
  await assertRefused(
    await vmdkWithFlatExtent(join(dir, 'sub', 'rel-flat.vmdk'), '../host-secret.bin'),
    /extent file "\.\.\/host-secret\.bin"/,
  );
});

test("a VMDK extent that is a symlink leading out of the descriptor's folder is refused", async () => {
  await mkdir(join(dir, 'linked'));
  await symlink(secret, join(dir, 'linked', 'linked-flat.vmdk'));
  await assertRefused(
    await vmdkWithFlatExtent(join(dir, 'linked', 'linked.vmdk'), 'linked-flat.vmdk'),
    /link to .*host-secret\.bin/,
  );
});

test('a VHDX differencing disk (crafted parent locator) is refused naming its parent', async () => {
  await assertRefused(await vhdxWithParent(join(dir, 'child.vhdx'), secret), /parent disk ".*host-secret\.bin"/);
});

async function ova(name: string, href: string, disk: string): Promise<string> {
  const ovf = join(dir, `${name}.ovf`);
  await writeFile(
    ovf,
    buildOvf({
      name,
      vcpus: 1,
      memoryMiB: 256,
      firmware: 'bios',
      disks: [{ href: 'disk.vmdk', capacityBytes: 1024 * 1024 }],
      nics: [],
    }).replace('ovf:href="disk.vmdk"', `ovf:href="${href}"`),
  );
  const path = join(dir, `${name}.ova`);
  await writeTar(path, [
    { name: `${name}.ovf`, source: ovf },
    { name: 'disk.vmdk', source: disk },
  ]);
  await rm(ovf);
  return path;
}

test('an OVA whose descriptor points outside the archive, or whose VMDK member names a host file, is refused', async () => {
  const plain = await splitVmdk(join(dir, 'ova-src'), 'one.vmdk');
  const outside = await ova('outside', '../host-secret.bin', plain);
  const r1 = await call('/conversions', { source: outside, name: 'ova-out' });
  assert.equal(r1.status, 422, r1.body);
  assert.equal(r1.json.error?.code, 'IMAGE_UNSAFE_REFERENCE');
  const member = await ova('member', 'disk.vmdk', await vmdkWithFlatExtent(join(dir, 'member-flat.vmdk'), secret));
  const r2 = await call('/conversions', { source: member, name: 'ova-member' });
  assert.equal(r2.status, 422, r2.body);
  assert.equal(r2.json.error?.code, 'IMAGE_UNSAFE_REFERENCE');
  assert.match(r2.json.error!.message, /inside an OVA must be one self-contained file/);
  // An .ovf beside its disks: a disk that is a link to a host file is outside the package too.
  await mkdir(join(dir, 'ovf-folder'));
  await writeFile(
    join(dir, 'ovf-folder', 'vm.ovf'),
    buildOvf({
      name: 'vm',
      vcpus: 1,
      memoryMiB: 256,
      firmware: 'bios',
      disks: [{ href: 'disk.vmdk', capacityBytes: 1024 * 1024 }],
      nics: [],
    }),
  );
  await symlink(secret, join(dir, 'ovf-folder', 'disk.vmdk'));
  const r3 = await call('/conversions', { source: join(dir, 'ovf-folder', 'vm.ovf'), name: 'ovf-link' });
  assert.equal(r3.status, 422, r3.body);
  assert.equal(r3.json.error?.code, 'IMAGE_UNSAFE_REFERENCE');
  for (const r of [r1, r2, r3]) assert.ok(!r.body.includes(MARKER));
  await assertNoMarker();
});

test('self-contained images still import equal to their source and inspect: qcow2, monolithicSparse and split VMDK, VHDX', async () => {
  const raw = join(dir, 'good.raw');
  const data = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 4096) data.write(`block ${i / 4096}`, i);
  await writeFile(raw, data);
  const convert = async (file: string, ...opts: string[]): Promise<string> => {
    await runProcess('qemu-img', ['convert', '-f', 'raw', ...opts, raw, join(dir, file)]);
    return join(dir, file);
  };
  const sources = {
    'good-qcow2': await convert('good.qcow2', '-O', 'qcow2'),
    'good-sparse': await convert('good-sparse.vmdk', '-O', 'vmdk', '-o', 'subformat=monolithicSparse'),
    'good-split': await splitVmdk(join(dir, 'split'), 'good-split.vmdk', data),
    'good-vhdx': await convert('good.vhdx', '-O', 'vhdx'),
  };
  for (const [name, source] of Object.entries(sources)) {
    const started = await call('/disks/import', { name, source });
    assert.equal(started.status, 202, `${source}: ${started.body}`);
    assert.equal((await jobEnd(String(started.json['id']))).state, 'succeeded', source);
    const disk = (
      await site.app.inject({ method: 'GET', url: `/disks/${name}`, headers: { authorization: `Bearer ${token}` } })
    ).json() as { path: string };
    await runProcess('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', raw, disk.path]);
    const inspected = await call('/inspections', { source });
    assert.equal(inspected.status, 200, `${source}: ${inspected.body}`);
    assert.equal(inspected.json['size'], data.length, source);
  }
});

test('a block device is read by its own header too: a qcow2 with a host-file backing on it is refused; inspection reads the device as raw bytes, never following the header', async () => {
  const lun = await LoopDevice.create(dir, 'lun', 8);
  try {
    const q = await readFile(await qcow2WithBacking(join(dir, 'on-device.qcow2'), secret));
    const fh = await open(lun.device, 'r+');
    try {
      await fh.write(q, 0, q.length, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const imported = await call('/disks/import', { name: 'from-device', source: lun.device });
    assert.equal(imported.status, 422, imported.body);
    assert.equal(imported.json.error?.code, 'IMAGE_UNSAFE_REFERENCE');
    await assertNoMarker();
    // Inspection reads a device as the raw disk it is (QEMU's host_device driver), never as an image.
    const inspected = await call('/inspections', { source: lun.device });
    assert.equal(inspected.status, 200, inspected.body);
    assert.equal(inspected.json['size'], 8 * 1024 * 1024);
    assert.ok(!inspected.body.includes(MARKER));
  } finally {
    await lun.detach();
  }
});

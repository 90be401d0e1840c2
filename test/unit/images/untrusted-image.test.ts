import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { vetUntrustedImage } from '../../../src/images/untrusted-image.js';
import { untrustedImageInfo, untrustedImageName } from '../../../src/qemu/qemu-img-read.js';
import { convertUntrustedImage } from '../../../src/qemu/qemu-img-write.js';
import {
  MARKER,
  markerFile,
  qcow2WithBacking,
  splitVmdk,
  vmdkWithFlatExtent,
} from '../../harness/untrusted-image-fixtures.js';

/*
 * vetUntrustedImage's rules (a split VMDK's extents stay in the descriptor's folder as regular
 * files; the format is pinned) and what QEMU 7.2 does with the name it is handed: a qcow2
 * opened with `backing: null` reads zeros where its host-file backing holds the marker.
 */
let dir = '';
let secret = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-untrusted-unit-'));
  secret = await markerFile(join(dir, 'secret.bin'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const code =
  (c: string, m?: RegExp) =>
  (e: unknown): boolean =>
    isMamoriError(e) && e.code === c && (m === undefined || m.test(e.message));

test('QEMU 7.2 with backing: null does not read the backing file; by plain name it does', async () => {
  const backed = await qcow2WithBacking(join(dir, 'backed.qcow2'), secret);
  await runProcess('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', backed, join(dir, 'followed.raw')]);
  assert.ok(
    (await readFile(join(dir, 'followed.raw'))).includes(MARKER),
    'the plain name follows the backing (the hole)',
  );
  const spec = { file: backed, format: 'qcow2' };
  assert.match(
    untrustedImageName(spec),
    /^json:\{"backing":null,"file":\{"driver":"file","filename":".*backed\.qcow2"\}\}$/,
  );
  await convertUntrustedImage(spec, join(dir, 'cut.raw'), 'raw');
  const cut = await readFile(join(dir, 'cut.raw'));
  assert.ok(!cut.includes(MARKER));
  assert.ok(cut.every((b) => b === 0));
  // info still reports the name from the header, without opening it.
  const info = await untrustedImageInfo(spec);
  assert.equal(info.backingFile, secret);
  assert.equal(info.format, 'qcow2');
});

test('a split VMDK in its own folder passes with its extents; the format is pinned', async () => {
  const desc = await splitVmdk(join(dir, 'split'), 'disk.vmdk');
  const v = await vetUntrustedImage({ file: desc });
  assert.equal(v.format, 'vmdk');
  assert.deepEqual(v.extents, [join(dir, 'split', 'disk-s001.vmdk')]);
});

test('extents: protocol prefixes, folders, directories and missing files are refused with typed codes', async () => {
  await mkdir(join(dir, 'x'));
  await assert.rejects(
    vetUntrustedImage({ file: await vmdkWithFlatExtent(join(dir, 'x', 'nbd.vmdk'), 'nbd:localhost:10809') }),
    code('IMAGE_UNSAFE_REFERENCE', /plain file names/),
  );
  await assert.rejects(
    vetUntrustedImage({ file: await vmdkWithFlatExtent(join(dir, 'x', 'sub.vmdk'), 'a/b.bin') }),
    code('IMAGE_UNSAFE_REFERENCE'),
  );
  await mkdir(join(dir, 'x', 'adir'));
  await assert.rejects(
    vetUntrustedImage({ file: await vmdkWithFlatExtent(join(dir, 'x', 'dir.vmdk'), 'adir') }),
    code('IMAGE_UNSAFE_REFERENCE', /not a regular file/),
  );
  await assert.rejects(
    vetUntrustedImage({ file: await vmdkWithFlatExtent(join(dir, 'x', 'gone.vmdk'), 'gone.bin') }),
    code('IMAGE_CORRUPT', /missing beside it/),
  );
  await symlink(secret, join(dir, 'x', 'link.bin'));
  await assert.rejects(
    vetUntrustedImage({ file: await vmdkWithFlatExtent(join(dir, 'x', 'link.vmdk'), 'link.bin') }),
    code('IMAGE_UNSAFE_REFERENCE', /link to .*secret\.bin/),
  );
});

test('sources: a folder, a missing path, a format mamori does not read, a format given', async () => {
  await assert.rejects(vetUntrustedImage({ file: dir }), code('IMAGE_UNREADABLE'));
  await assert.rejects(vetUntrustedImage({ file: join(dir, 'nope') }), code('IMAGE_NOT_FOUND'));
  await writeFile(join(dir, 'q.qed'), Buffer.concat([Buffer.from('QED\0'), Buffer.alloc(4092)]));
  await assert.rejects(vetUntrustedImage({ file: join(dir, 'q.qed') }), code('IMAGE_FORMAT_UNSUPPORTED', /qed image/));
  const backed = join(dir, 'backed.qcow2');
  await assert.rejects(vetUntrustedImage({ file: backed }), code('IMAGE_UNSAFE_REFERENCE', /backing file/));
  // Read as raw bytes (the person said so), it names nothing: QEMU sees the file, not its backing.
  assert.equal((await vetUntrustedImage({ file: backed, format: 'raw' })).format, 'raw');
  await assert.rejects(vetUntrustedImage({ file: secret, format: 'qcow2' }), code('IMAGE_CORRUPT', /not a qcow2/));
});

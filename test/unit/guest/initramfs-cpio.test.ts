import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { runProcess } from '../../../src/core/run-process.js';
import { buildCpioNewc, buildInitramfs, type CpioEntry } from '../../../src/guest/initramfs-cpio.js';

const ENTRIES: CpioEntry[] = [
  { type: 'dir', path: 'bin' },
  { type: 'dir', path: 'dev' },
  { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
  { type: 'file', path: 'bin/busybox', data: Buffer.from('\x7fELF-not-really'), mode: 0o755 },
  { type: 'symlink', path: 'bin/sh', target: 'busybox' },
  { type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
  { type: 'file', path: 'odd', data: Buffer.from('abc') },
];

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-cpio-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('cpio(1) lists what we packed, with modes, device numbers and link targets', async () => {
  const archive = join(dir, 'a.cpio');
  await writeFile(archive, buildCpioNewc(ENTRIES));
  const { stdout } = await runProcess('cpio', ['-itv', '-F', archive]);
  const lines = stdout.trim().split('\n');
  assert.equal(lines.length, ENTRIES.length);
  assert.match(lines[2] ?? '', /^crw------- .* 5,\s+1 .* dev\/console$/);
  assert.match(lines[3] ?? '', /^-rwxr-xr-x .* bin\/busybox$/);
  assert.match(lines[4] ?? '', /bin\/sh -> busybox$/);
});

test('files extract byte for byte', async () => {
  const out = join(dir, 'x');
  await runProcess('mkdir', ['-p', out]);
  const archive = join(dir, 'b.cpio');
  // The device node needs no extraction to prove the layout; leave it out.
  await writeFile(archive, buildCpioNewc(ENTRIES.filter((e) => e.type !== 'chardev')));
  await runProcess('cpio', ['-id', '--quiet', '-D', out, '-F', archive]);
  assert.equal(await readFile(join(out, 'init'), 'utf8'), '#!/bin/sh\necho hi\n');
  assert.equal(await readFile(join(out, 'odd'), 'utf8'), 'abc');
  assert.equal(await readlink(join(out, 'bin/sh')), 'busybox');
});

test('the same entries give the same bytes, and the initramfs is their gzip', () => {
  const a = buildCpioNewc(ENTRIES);
  assert.deepEqual(buildCpioNewc(ENTRIES), a);
  assert.equal(a.length % 4, 0);
  assert.deepEqual(gunzipSync(buildInitramfs(ENTRIES)), a);
});

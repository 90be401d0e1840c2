import { strict as assert } from 'node:assert';
import { after, before, beforeEach, describe, it } from 'node:test';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import {
  checkImage,
  checkImageExclusive,
  mapImage,
  measureQcow2,
  openImageExclusive,
  queryImageInfo,
} from '../../../src/qemu/qemu-img-read.js';
import {
  commitImage,
  convertImage,
  convertToRaw,
  createImage,
  createQcow2,
  editBitmap,
  flattenToQcow2,
  rebaseSafe,
  rebaseUnsafe,
} from '../../../src/qemu/qemu-img-write.js';
import { assertClosedAndSound, commitChain, rebaseChain, rebaseHeader } from '../../../src/replication/chain-images.js';
import { editImageBitmap, readImageBitmaps } from '../../../src/replication/dirty-bitmaps.js';

/**
 * The argument arrays each qemu-img function passes, against the arrays the call sites
 * spelled out before they went through src/qemu/qemu-img-read.ts and qemu-img-write.ts (issue 20): a fake qemu-img first
 * on PATH records its argv and answers with canned JSON, or fails as told.
 */
const SITE = 'cluster_size=131072,extended_l2=on';
let dir = '';
let log = '';
const savedPath = process.env['PATH'];

const FAKE = `#!/usr/bin/env node
const fs = require('node:fs');
const args = process.argv.slice(2);
fs.appendFileSync(process.env.FAKE_QEMU_IMG_LOG, JSON.stringify(args) + '\\n');
// convertImage fsyncs its target: make the ones inside the test folder.
if (args[0] === 'convert' && args.at(-1).startsWith(process.env.FAKE_QEMU_IMG_DIR)) fs.writeFileSync(args.at(-1), '');
if (process.env.FAKE_QEMU_IMG_STDERR) process.stderr.write(process.env.FAKE_QEMU_IMG_STDERR);
const out = {
  info: { format: 'qcow2', 'virtual-size': 1048576, 'actual-size': 4096, 'backing-filename': 'b.qcow2',
    'format-specific': { type: 'qcow2', data: { corrupt: false, bitmaps: [{ name: 'mamori-1', granularity: 65536, flags: ['auto'] }] } } },
  measure: { required: 393216, 'fully-allocated': 1441792 },
  map: [{ start: 0, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 0 }],
}[args[0]];
if (out && args.includes('--output=json')) process.stdout.write(JSON.stringify(out));
process.exit(Number(process.env.FAKE_QEMU_IMG_EXIT ?? 0));
`;

async function calls(): Promise<string[][]> {
  const text = await readFile(log, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as string[]);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-fake-qemu-img-'));
  log = join(dir, 'calls.jsonl');
  await writeFile(join(dir, 'qemu-img'), FAKE);
  await chmod(join(dir, 'qemu-img'), 0o755);
  process.env['PATH'] = `${dir}:${savedPath ?? ''}`;
  process.env['FAKE_QEMU_IMG_LOG'] = log;
  process.env['FAKE_QEMU_IMG_DIR'] = dir;
});

beforeEach(async () => {
  await rm(log, { force: true });
  delete process.env['FAKE_QEMU_IMG_EXIT'];
  delete process.env['FAKE_QEMU_IMG_STDERR'];
});

after(async () => {
  process.env['PATH'] = savedPath;
  delete process.env['FAKE_QEMU_IMG_LOG'];
  delete process.env['FAKE_QEMU_IMG_DIR'];
  await rm(dir, { recursive: true, force: true });
});

describe('qemu-img: the arguments the call sites passed before', () => {
  it('create: site images and overlays in one layout, the fleecing scratch in qemu defaults', async () => {
    await createQcow2('/p/ov.qcow2', { unsafe: true, backing: { file: '/dev/sdb', format: 'raw' }, sizeBytes: 1024 }); // vms/vm-snapshots.ts
    await createQcow2('/p/r.qcow2', { backing: { file: '/r/p1.qcow2', format: 'qcow2' } }); // plans/vm-recovery.ts, disks/disk-service.ts
    await createQcow2('/r/base.qcow2', { sizeBytes: 2048 }); // replication/replica-chain.ts, no seed
    await createQcow2('/r/base.qcow2', { backing: { file: '/s/seed.raw', format: 'raw' }, sizeBytes: 2048 }); // seeded
    await createQcow2('/r/staging-000002.qcow2', {
      backing: { file: 'p000001.qcow2', format: 'qcow2' },
      sizeBytes: 2048,
    });
    await createQcow2('/f/fleece.qcow2', { layout: 'qemu-default', sizeBytes: 4096 }); // replication/fleecing-point.ts
    await createQcow2('/t/t.qcow2', { backing: { file: '/rep/disk0.qcow2', format: 'qcow2' } }); // pools/sparse-image-writer.ts
    await createImage('/p/d.qcow2', 'qcow2', 8192);
    await createImage('/p/d.raw', 'raw', 8192);
    assert.deepEqual(await calls(), [
      ['create', '-q', '-f', 'qcow2', '-o', SITE, '-u', '-b', '/dev/sdb', '-F', 'raw', '/p/ov.qcow2', '1024'],
      ['create', '-q', '-f', 'qcow2', '-o', SITE, '-b', '/r/p1.qcow2', '-F', 'qcow2', '/p/r.qcow2'],
      ['create', '-q', '-f', 'qcow2', '-o', SITE, '/r/base.qcow2', '2048'],
      ['create', '-q', '-f', 'qcow2', '-o', SITE, '-b', '/s/seed.raw', '-F', 'raw', '/r/base.qcow2', '2048'],
      [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-o',
        SITE,
        '-b',
        'p000001.qcow2',
        '-F',
        'qcow2',
        '/r/staging-000002.qcow2',
        '2048',
      ],
      ['create', '-q', '-f', 'qcow2', '/f/fleece.qcow2', '4096'],
      ['create', '-q', '-f', 'qcow2', '-o', SITE, '-b', '/rep/disk0.qcow2', '-F', 'qcow2', '/t/t.qcow2'],
      ['create', '-q', '-f', 'qcow2', '-o', SITE, '/p/d.qcow2', '8192'],
      ['create', '-q', '-f', 'raw', '/p/d.raw', '8192'],
    ]);
  });

  it("commit, rebase (safe and unsafe), and the replica chain's merges", async () => {
    await commitImage('/p/ov.qcow2', { format: 'qcow2', base: '/p/d.qcow2' }); // vms/vm-snapshots.ts
    await rebaseUnsafe('/p/above.qcow2', { file: '/p/d.qcow2', format: 'qcow2' });
    await rebaseUnsafe('/pool/os0.qcow2', { file: '/rep/disk0.qcow2', format: 'qcow2' }); // pools/desktop-move.ts (now with -q, a no-op for -u)
    const layers = [
      { file: '/r/base.qcow2', format: 'qcow2' as const },
      { file: '/r/p1.qcow2', format: 'qcow2' as const },
    ];
    await commitChain(layers, null, '/r/p1.qcow2');
    await commitChain(layers, '/r/base.qcow2', '/r/p1.qcow2');
    await rebaseHeader('/r/p2.qcow2', { file: 'base.qcow2', format: 'qcow2' }, 'p2.qcow2');
    await rebaseChain(layers.slice(0, 1), null, '/r/base.qcow2');
    await rebaseSafe('/x/a.qcow2', { file: '/x/b.qcow2', format: 'qcow2' }, { format: 'qcow2' });
    const spec1 =
      'json:{"driver":"qcow2","file":{"driver":"file","filename":"/r/p1.qcow2"},"backing":{"driver":"qcow2","file":{"driver":"file","filename":"/r/base.qcow2"},"backing":null}}';
    const spec0 = 'json:{"driver":"qcow2","file":{"driver":"file","filename":"/r/base.qcow2"},"backing":null}';
    assert.deepEqual(await calls(), [
      ['commit', '-q', '-d', '-f', 'qcow2', '-b', '/p/d.qcow2', '/p/ov.qcow2'],
      ['rebase', '-q', '-u', '-f', 'qcow2', '-b', '/p/d.qcow2', '-F', 'qcow2', '/p/above.qcow2'],
      ['rebase', '-q', '-u', '-f', 'qcow2', '-b', '/rep/disk0.qcow2', '-F', 'qcow2', '/pool/os0.qcow2'],
      ['commit', '-q', '-d', spec1],
      ['commit', '-q', '-d', '-b', '/r/base.qcow2', spec1],
      ['rebase', '-q', '-u', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', '/r/p2.qcow2'],
      ['rebase', '-q', '-b', '', spec0],
      ['rebase', '-q', '-f', 'qcow2', '-b', '/x/b.qcow2', '-F', 'qcow2', '/x/a.qcow2'],
    ]);
  });

  it('info, measure, map, convert and bitmap give typed results', async () => {
    const info = await queryImageInfo('/p/d.qcow2', { format: 'qcow2', forceShare: true });
    assert.deepEqual(info, {
      format: 'qcow2',
      virtualSize: 1048576,
      actualSize: 4096,
      backingFile: 'b.qcow2',
      dataFile: null,
      corrupt: false,
      bitmaps: [{ name: 'mamori-1', granularity: 65536, flags: ['auto'] }],
    });
    await queryImageInfo('/w/disk', { timeoutMs: 60_000 }); // guest/writelog-verifier.ts: format probed
    assert.deepEqual(
      (await readImageBitmaps('/p/d.qcow2')).map((b) => [b.name, b.recording]),
      [['mamori-1', true]],
    );
    assert.deepEqual(await measureQcow2('/p/d.qcow2', 'qcow2', 'replica', { forceShare: true }), {
      required: 393216,
      fullyAllocated: 1441792,
    });
    assert.deepEqual(await mapImage('/w/disk.raw', 'raw', { forceShare: true }), [
      { start: 0, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 0 },
    ]);
    await flattenToQcow2('/p/d.qcow2', 'qcow2', '/rep/disk0.qcow2.partial', 'replica', { forceShare: true });
    await convertToRaw('/w/disk.qcow2', 'qcow2', '/tmp/x/disk.raw', { forceShare: true });
    await convertToRaw('/w/disk.qcow2', 'qcow2', '/tmp/x/disk.raw');
    await convertImage('/i/a.vmdk', 'vmdk', join(dir, 'out.qcow2'), 'qcow2');
    await editImageBitmap('/p/d.qcow2', 'mamori-0', [{ op: 'add' }]);
    await editBitmap('/p/d.qcow2', 'mamori-2', [
      { op: 'add', granularity: 4096, disabled: true },
      { op: 'merge', source: 'mamori-1' },
    ]);
    await editImageBitmap('/p/d.qcow2', 'mamori-0', [{ op: 'remove' }]);
    await openImageExclusive('/r/p1.qcow2', 'qcow2');
    assert.deepEqual(await calls(), [
      ['info', '--output=json', '-U', '-f', 'qcow2', '/p/d.qcow2'],
      ['info', '--output=json', '/w/disk'],
      ['info', '--output=json', '-f', 'qcow2', '/p/d.qcow2'],
      // Before: measure -U --output=json ... (pools/pool-replica.ts), the replica layout.
      ['measure', '-U', '--output=json', '-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=131072', '/p/d.qcow2'],
      ['map', '--output=json', '-f', 'raw', '-U', '/w/disk.raw'],
      [
        'convert',
        '-U',
        '-W',
        '-m',
        '8',
        '-f',
        'qcow2',
        '-O',
        'qcow2',
        '-o',
        'cluster_size=131072',
        '/p/d.qcow2',
        '/rep/disk0.qcow2.partial',
      ],
      ['convert', '-U', '-f', 'qcow2', '-O', 'raw', '/w/disk.qcow2', '/tmp/x/disk.raw'],
      ['convert', '-f', 'qcow2', '-O', 'raw', '/w/disk.qcow2', '/tmp/x/disk.raw'],
      ['convert', '-p', '-W', '-m', '8', '-f', 'vmdk', '-O', 'qcow2', '-o', SITE, '/i/a.vmdk', join(dir, 'out.qcow2')],
      ['bitmap', '--add', '-g', '65536', '-f', 'qcow2', '/p/d.qcow2', 'mamori-0'],
      ['bitmap', '--add', '--disable', '--merge', 'mamori-1', '-g', '4096', '-f', 'qcow2', '/p/d.qcow2', 'mamori-2'],
      ['bitmap', '--remove', '-f', 'qcow2', '/p/d.qcow2', 'mamori-0'],
      ['info', '-f', 'qcow2', '/r/p1.qcow2'],
    ]);
  });

  it('check: the exit codes each caller reads as success, and its error mapping', async () => {
    process.env['FAKE_QEMU_IMG_EXIT'] = '3'; // leaked clusters only
    await checkImage('/i/a.qcow2', 'qcow2');
    await checkImageExclusive('/r/st.qcow2');
    process.env['FAKE_QEMU_IMG_EXIT'] = '63'; // the format has no check
    await checkImage('/i/a.vdi', 'vdi');
    await assert.rejects(checkImageExclusive('/r/st.qcow2'), (e) => isMamoriError(e, 'PROCESS_FAILED'));
    await checkImage('/i/a.raw', 'raw'); // raw has nothing to check: no call
    process.env['FAKE_QEMU_IMG_EXIT'] = '2';
    await assert.rejects(checkImage('/i/a.qcow2', 'qcow2'), (e) => isMamoriError(e, 'IMAGE_CORRUPT'));
    await assert.rejects(assertClosedAndSound('/r/st.qcow2'), (e) => isMamoriError(e, 'IMAGE_CORRUPT'));
    process.env['FAKE_QEMU_IMG_EXIT'] = '1';
    process.env['FAKE_QEMU_IMG_STDERR'] = 'qemu-img: Could not open \'/r/st.qcow2\': Failed to get "write" lock\n';
    await assert.rejects(assertClosedAndSound('/r/st.qcow2'), (e) => isMamoriError(e, 'DISK_IN_USE'));
    await assert.rejects(commitChain([{ file: '/r/base.qcow2', format: 'qcow2' }], null, '/r/base.qcow2'), (e) =>
      isMamoriError(e, 'DISK_IN_USE'),
    );
    await assert.rejects(editImageBitmap('/p/d.qcow2', 'mamori-0', [{ op: 'remove' }]), (e) =>
      isMamoriError(e, 'DISK_IN_USE'),
    );
    await assert.rejects(rebaseUnsafe('/p/a.qcow2', { file: '/p/b.qcow2', format: 'qcow2' }), (e) =>
      isMamoriError(e, 'PROCESS_FAILED'),
    );
    const check = (await calls()).filter((c) => c[0] === 'check');
    assert.deepEqual(check.slice(0, 4), [
      ['check', '-q', '-U', '-f', 'qcow2', '/i/a.qcow2'],
      ['check', '-q', '-f', 'qcow2', '/r/st.qcow2'],
      ['check', '-q', '-U', '-f', 'vdi', '/i/a.vdi'],
      ['check', '-q', '-f', 'qcow2', '/r/st.qcow2'],
    ]);
  });
});

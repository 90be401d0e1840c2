import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { buildIso9660, type IsoFile } from '../../../src/guest/iso9660-writer.js';

const run = promisify(execFile);
const SECTOR = 2048;
const DATE = new Date('2026-03-04T05:06:07.890Z');

const BINARY = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7 + 3) & 0xff)); // spans three sectors
const FILES: IsoFile[] = [
  { name: 'meta-data', data: 'instance-id: desktop-0042\nlocal-hostname: desktop-0042\n' },
  { name: 'user-data', data: '#cloud-config\n' },
  {
    name: 'network-config',
    data: 'version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: "52:54:00:12:34:56"\n',
  },
  { name: 'mamori-customize.sh', data: '#!/bin/sh\necho customized\n' },
  { name: 'empty', data: '' },
  { name: 'blob.bin', data: BINARY },
];

// ---- A small independent ISO 9660 reader: enough of ECMA-119, SUSP/RRIP and Joliet to check what we wrote.

function both32(b: Buffer, at: number): number {
  const le = b.readUInt32LE(at);
  assert.equal(b.readUInt32BE(at + 4), le, `both-byte-order field at ${at} disagrees`);
  return le;
}

function both16(b: Buffer, at: number): number {
  const le = b.readUInt16LE(at);
  assert.equal(b.readUInt16BE(at + 2), le, `both-byte-order field at ${at} disagrees`);
  return le;
}

interface Rec {
  id: Buffer;
  extent: number;
  size: number;
  directory: boolean;
  susp: Map<string, Buffer[]>;
}

function suspEntries(image: Buffer, area: Buffer, into = new Map<string, Buffer[]>()): Map<string, Buffer[]> {
  let at = 0;
  while (at + 4 <= area.length) {
    const sig = area.toString('latin1', at, at + 2);
    const len = area[at + 2] ?? 0;
    if (len < 4) break; // a trailing pad byte
    assert.equal(area[at + 3], 1, `${sig} entry version`);
    const data = area.subarray(at + 4, at + len);
    into.set(sig, [...(into.get(sig) ?? []), data]);
    if (sig === 'CE') {
      // SUSP 5.1: the entries continue in another sector.
      const start = both32(data, 0) * SECTOR + both32(data, 8);
      suspEntries(image, image.subarray(start, start + both32(data, 16)), into);
    }
    at += len;
  }
  return into;
}

function readDirectory(image: Buffer, extent: number, size: number): Rec[] {
  const recs: Rec[] = [];
  let at = extent * SECTOR;
  const end = at + size;
  while (at < end) {
    const len = image[at] ?? 0;
    if (len === 0) {
      at = (Math.floor(at / SECTOR) + 1) * SECTOR; // rest of the sector is padding
      continue;
    }
    assert.equal(len % 2, 0, 'record length is even');
    assert.ok(
      Math.floor(at / SECTOR) === Math.floor((at + len - 1) / SECTOR),
      'a record does not cross a sector boundary',
    );
    const r = image.subarray(at, at + len);
    const idLen = r[32] ?? 0;
    const suStart = 33 + idLen + (idLen % 2 === 0 ? 1 : 0);
    recs.push({
      id: Buffer.from(r.subarray(33, 33 + idLen)),
      extent: both32(r, 2),
      size: both32(r, 10),
      directory: ((r[25] ?? 0) & 2) !== 0,
      susp: suspEntries(image, r.subarray(suStart)),
    });
    both16(r, 28);
    at += len;
  }
  return recs;
}

interface Parsed {
  volumeId: string;
  jolietVolumeId: string;
  volumeSectors: number;
  creation: string;
  rockRidge: Map<string, Buffer>;
  joliet: Map<string, Buffer>;
  isoIds: string[];
  rootDot: Rec;
  files: Rec[];
}

function parseIso(image: Buffer): Parsed {
  assert.equal(image.length % SECTOR, 0);
  assert.ok(
    image.subarray(0, 16 * SECTOR).every((b) => b === 0),
    'system area is zero',
  );
  const descriptors = new Map<number, Buffer>();
  for (let s = 16; ; s++) {
    const d = image.subarray(s * SECTOR, (s + 1) * SECTOR);
    assert.equal(d.toString('latin1', 1, 6), 'CD001');
    if (d[0] === 255) break;
    descriptors.set(d[0] ?? -1, d);
  }
  const pvd = descriptors.get(1);
  const svd = descriptors.get(2);
  assert.ok(pvd && svd, 'a primary and a supplementary descriptor');
  assert.equal(svd.toString('latin1', 88, 91), '%/E');
  assert.equal(both16(pvd, 128), SECTOR);
  const volumeSectors = both32(pvd, 80);
  assert.equal(both32(svd, 80), volumeSectors);

  const hierarchy = (d: Buffer): Rec[] => {
    const root = d.subarray(156, 190);
    const extent = both32(root, 2);
    // Both path tables point at the root, each in its own byte order (9.4).
    assert.equal(both32(d, 132), 10);
    assert.equal(image.readUInt32LE(d.readUInt32LE(140) * SECTOR + 2), extent);
    assert.equal(image.readUInt32BE(d.readUInt32BE(148) * SECTOR + 2), extent);
    const recs = readDirectory(image, extent, both32(root, 10));
    assert.deepEqual(
      recs.slice(0, 2).map((r) => [...r.id]),
      [[0], [1]],
      '"." and ".." come first',
    );
    return recs;
  };
  const contents = (r: Rec): Buffer => {
    if (r.size === 0) assert.equal(r.extent, 0, 'an empty file has extent 0');
    return image.subarray(r.extent * SECTOR, r.extent * SECTOR + r.size);
  };

  const primary = hierarchy(pvd);
  const rockRidge = new Map<string, Buffer>();
  for (const r of primary.slice(2)) {
    const nm = r.susp.get('NM')?.[0];
    assert.ok(nm, `an NM entry for ${r.id.toString('latin1')}`);
    rockRidge.set(nm.subarray(1).toString('utf8'), contents(r));
  }
  const joliet = new Map<string, Buffer>();
  for (const r of hierarchy(svd).slice(2)) joliet.set(Buffer.from(r.id).swap16().toString('utf16le'), contents(r));
  const [rootDot] = primary;
  assert.ok(rootDot);
  return {
    volumeId: pvd.toString('latin1', 40, 72),
    jolietVolumeId: Buffer.from(svd.subarray(40, 72)).swap16().toString('utf16le'),
    volumeSectors,
    creation: pvd.toString('latin1', 813, 829),
    rockRidge,
    joliet,
    isoIds: primary.slice(2).map((r) => r.id.toString('latin1')),
    rootDot,
    files: primary.slice(2),
  };
}

function expected(files: IsoFile[]): Map<string, Buffer> {
  return new Map(files.map((f) => [f.name, Buffer.from(f.data)]));
}

// ---- Tests

test('names and contents round-trip through both Rock Ridge and Joliet', () => {
  const image = buildIso9660('cidata', FILES, { date: DATE });
  const iso = parseIso(image);
  assert.equal(iso.volumeId, 'cidata'.padEnd(32, ' '));
  assert.equal(iso.jolietVolumeId, 'cidata'.padEnd(16, ' '));
  assert.equal(iso.volumeSectors * SECTOR, image.length);
  assert.deepEqual(iso.rockRidge, expected(FILES));
  assert.deepEqual(iso.joliet, expected(FILES));
  // Plain ISO 9660 identifiers: unique, d-characters, 8.3 with version 1.
  assert.equal(new Set(iso.isoIds).size, FILES.length);
  for (const id of iso.isoIds) assert.match(id, /^[A-Z0-9_]{0,8}\.[A-Z0-9_]{0,3};1$/);
  assert.ok(iso.isoIds.includes('META_DAT.;1') && iso.isoIds.includes('MAMORI_C.SH;1'));
  assert.deepEqual([...iso.isoIds].sort(), iso.isoIds, 'records are sorted (9.3)');
});

test('the root carries SUSP SP, the RRIP_1991A ER, and files are read-only POSIX files', () => {
  const iso = parseIso(buildIso9660('cidata', FILES, { date: DATE }));
  const sp = iso.rootDot.susp.get('SP')?.[0];
  assert.deepEqual(sp && [...sp], [0xbe, 0xef, 0]);
  const er = iso.rootDot.susp.get('ER')?.[0];
  assert.ok(er);
  assert.equal(er.toString('latin1', 4, 4 + (er[0] ?? 0)), 'RRIP_1991A');
  assert.equal(both32(iso.rootDot.susp.get('PX')?.[0] ?? Buffer.alloc(8), 0), 0o040555);
  for (const f of iso.files) assert.equal(both32(f.susp.get('PX')?.[0] ?? Buffer.alloc(8), 0), 0o100444);
});

test('each file starts on its own sector and the image holds no padding', () => {
  const image = buildIso9660('cidata', FILES, { date: DATE });
  const iso = parseIso(image);
  const used = iso.files.filter((f) => f.size > 0).sort((a, b) => a.extent - b.extent);
  for (let i = 1; i < used.length; i++) {
    const prev = used[i - 1];
    assert.ok(prev && (used[i]?.extent ?? 0) >= prev.extent + Math.ceil(prev.size / SECTOR), 'extents do not overlap');
  }
  const last = used[used.length - 1];
  assert.ok(last);
  assert.equal(image.length, (last.extent + Math.ceil(last.size / SECTOR)) * SECTOR);
  // The four files of a real config drive make a 60 KiB image (genisoimage pads to ~370 KiB).
  assert.equal(buildIso9660('cidata', FILES.slice(0, 4), { date: DATE }).length, 30 * SECTOR);
});

test('many files spill over several directory sectors; clashing 8.3 names are made unique', () => {
  const files: IsoFile[] = ['meta-data', 'meta-data.bak', 'META_DATA', 'meta-datum'].map((name, i) => ({
    name,
    data: `v${i}\n`,
  }));
  for (let i = 0; i < 80; i++)
    files.push({ name: `file-number-${i}-with-a-rather-long-name.txt`, data: `content ${i}\n` });
  const iso = parseIso(buildIso9660('cidata', files, { date: DATE }));
  assert.deepEqual(iso.rockRidge, expected(files));
  assert.deepEqual(iso.joliet, expected(files));
  assert.equal(new Set(iso.isoIds).size, files.length);
});

test('a fixed date gives the same bytes whatever the input order, and is recorded', () => {
  const a = buildIso9660('cidata', FILES, { date: DATE });
  assert.deepEqual(buildIso9660('cidata', [...FILES].reverse(), { date: DATE }), a);
  assert.equal(parseIso(a).creation, '2026030405060789');
  assert.notDeepEqual(buildIso9660('cidata', FILES, { date: new Date('2027-01-01T00:00:00Z') }), a);
});

test('bad input throws INVALID_INPUT', () => {
  const bad: Array<[string, () => unknown]> = [
    ['slash', () => buildIso9660('cidata', [{ name: 'a/b', data: '' }])],
    ['NUL', () => buildIso9660('cidata', [{ name: 'a\0b', data: '' }])],
    ['empty name', () => buildIso9660('cidata', [{ name: '', data: '' }])],
    ['dot', () => buildIso9660('cidata', [{ name: '..', data: '' }])],
    ['65 characters', () => buildIso9660('cidata', [{ name: 'x'.repeat(65), data: '' }])],
    [
      'duplicate',
      () =>
        buildIso9660('cidata', [
          { name: 'a', data: '1' },
          { name: 'a', data: '2' },
        ]),
    ],
    // Joliet readers match names ignoring case: Linux mounted with norock opened the wrong file of such a pair.
    [
      'duplicate but for case',
      () =>
        buildIso9660('cidata', [
          { name: 'meta_data', data: '1' },
          { name: 'META_DATA', data: '2' },
        ]),
    ],
    ['volume id with a dash', () => buildIso9660('ci-data', [])],
    ['empty volume id', () => buildIso9660('', [])],
    ['33-character volume id', () => buildIso9660('v'.repeat(33), [])],
    ['over 16 MiB', () => buildIso9660('cidata', [{ name: 'big', data: Buffer.alloc(16 * 1024 * 1024) }])],
    ['invalid date', () => buildIso9660('cidata', [], { date: new Date(Number.NaN) })],
  ];
  for (const [what, fn] of bad) assert.throws(fn, (e: unknown) => isMamoriError(e, 'INVALID_INPUT'), what);
  assert.doesNotThrow(() => buildIso9660('cidata', [{ name: 'x'.repeat(64), data: 'ok' }]));
});

// ---- The real tools, when installed.

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-iso-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function hasTool(name: string): Promise<boolean> {
  try {
    await run(name, ['--version']);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

test('isoinfo sees the volume id, Joliet and Rock Ridge, and extracts every file', async (t) => {
  if (!(await hasTool('isoinfo'))) return t.skip('isoinfo is not installed');
  const path = join(dir, 'cidata.iso');
  await writeFile(path, buildIso9660('cidata', FILES, { date: DATE }));
  const { stdout: info } = await run('isoinfo', ['-d', '-i', path]);
  assert.match(info, /^Volume id: cidata$/m);
  assert.match(info, /^Logical block size is: 2048$/m);
  assert.match(info, /Joliet with UCS level 3 found/);
  assert.match(info, /Rock Ridge signatures version 1 found/);
  const { stdout: listing } = await run('isoinfo', ['-l', '-R', '-i', path]);
  for (const f of FILES) assert.match(listing, new RegExp(`^-r--r--r-- .* ${f.name.replace('.', '\\.')} $`, 'm'));
  for (const mode of ['-R', '-J']) {
    for (const f of FILES) {
      const { stdout } = await run('isoinfo', [mode, '-x', `/${f.name}`, '-i', path], { encoding: 'buffer' });
      assert.deepEqual(stdout, Buffer.from(f.data), `${mode} ${f.name}`);
    }
  }
});

test('blkid reports an iso9660 volume labelled cidata', async (t) => {
  if (!(await hasTool('blkid'))) return t.skip('blkid is not installed');
  const path = join(dir, 'blkid.iso');
  await writeFile(path, buildIso9660('cidata', FILES.slice(0, 4), { date: DATE }));
  const { stdout } = await run('blkid', ['-p', '-o', 'export', path]);
  assert.match(stdout, /^LABEL=cidata$/m);
  assert.match(stdout, /^TYPE=iso9660$/m);
});

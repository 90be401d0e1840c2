import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkCompat, parseCompatGuide, recordCompat, searchCompat, readCompatGuide, type CompatEntry, type CompatGuide } from '../../../src/adapters/compat-guide.js';

const row = (over: Partial<CompatEntry> = {}): CompatEntry => ({
  adapter: 'zfs', adapterVersion: '1.0.0', vendor: 'OpenZFS', arrayModel: 'zfs-fuse', softwareVersions: ['0.7.0'], protocol: 1, mamoriVersions: ['0.1.0'],
  conformance: { result: 'pass', date: '2026-11-27T18:00:00.000Z', passed: 15, failed: 0 }, ...over,
});
const guide = (...entries: CompatEntry[]): CompatGuide => ({ format: 1, entries });

test('a guide that does not parse, or is wrong in any field, is refused with what is wrong', () => {
  assert.throws(() => parseCompatGuide('{"format":1,"entries":[', 'g.json'), /compatibility guide g\.json does not parse: .*JSON/);
  assert.throws(() => parseCompatGuide('{"format":2,"entries":[]}', 'g.json'), /must be \{"format":1,"entries":\[\.\.\.\]\}/);
  assert.throws(() => parseCompatGuide(JSON.stringify(guide(row({ arrayModel: '' }))), 'g.json'), /entry 1 has no arrayModel/);
  assert.throws(() => parseCompatGuide(JSON.stringify(guide(row(), row({ softwareVersions: [] }))), 'g.json'), /entry 2 must list softwareVersions/);
  assert.throws(() => parseCompatGuide(JSON.stringify(guide(row({ protocol: 2 }))), 'g.json'), /names protocol 2; this mamori speaks 1/);
  assert.throws(() => parseCompatGuide(JSON.stringify(guide(row({ conformance: { result: 'maybe' } as never }))), 'g.json'), /has no conformance result/);
  assert.deepEqual(parseCompatGuide(JSON.stringify(guide(row())), 'g.json').entries.length, 1);
});

test('check says supported, or the first thing that differs from a tested row', () => {
  const g = guide(row(), row({ arrayModel: 'OpenZFS', softwareVersions: ['2.1.11'] }));
  const zfs = { name: 'zfs', version: '1.0.0' };
  assert.deepEqual(checkCompat(g, zfs, { model: 'zfs-fuse', softwareVersion: '0.7.0' }).supported, true);
  assert.match(checkCompat(g, zfs, { model: 'NetApp FAS', softwareVersion: '9.1' }).reason, /NetApp FAS with the zfs adapter is not in the compatibility guide \(it lists zfs-fuse, OpenZFS\)/);
  assert.match(checkCompat(g, zfs, { model: 'zfs-fuse', softwareVersion: '0.6.9' }).reason, /zfs-fuse software 0\.6\.9 is not listed; tested: 0\.7\.0/);
  assert.match(checkCompat(g, { name: 'zfs', version: '2.0.0' }, { model: 'zfs-fuse', softwareVersion: '0.7.0' }).reason, /adapter zfs 2\.0\.0 is not listed for it; tested: 1\.0\.0/);
  assert.match(checkCompat(g, zfs, { model: 'zfs-fuse', softwareVersion: '0.7.0' }, '0.2.0').reason, /tested with mamori 0\.1\.0, not 0\.2\.0/);
  const failed = guide(row({ conformance: { result: 'fail', date: '2026-11-27T18:00:00.000Z', passed: 7, failed: 1 } }));
  assert.match(checkCompat(failed, zfs, { model: 'zfs-fuse', softwareVersion: '0.7.0' }).reason, /its conformance run of 2026-11-27T18:00:00\.000Z failed/);
});

test('a recorded run replaces its own row only; search filters by adapter and model, case-insensitively', () => {
  const g = recordCompat(guide(row(), row({ arrayModel: 'OpenZFS', softwareVersions: ['2.1.11'] })), row({ conformance: { result: 'fail', date: 'd', passed: 1, failed: 1 } }));
  assert.equal(g.entries.length, 2);
  assert.equal(g.entries.find((e) => e.arrayModel === 'zfs-fuse')!.conformance.result, 'fail');
  assert.deepEqual(searchCompat(g, { array: 'openzfs' }).map((e) => e.arrayModel), ['OpenZFS']);
  assert.equal(searchCompat(g, { adapter: 'netapp' }).length, 0);
});

test('the shipped guide parses', async () => {
  const shipped = await readCompatGuide();
  assert.equal(shipped.format, 1);
});

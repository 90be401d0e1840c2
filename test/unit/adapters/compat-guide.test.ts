import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkCompat,
  featuresForRow,
  parseCompatGuide,
  recordCompat,
  requiredFeaturesOf,
  searchCompat,
  readCompatGuide,
  type CompatEntry,
  type CompatGuide,
} from '../../../src/adapters/compat-guide.js';
import { OPENZFS_FEATURE_SETS } from '../../../src/adapters/openzfs-feature-sets.js';

const row = (over: Partial<CompatEntry> = {}): CompatEntry => ({
  adapter: 'zfs',
  adapterVersion: '1.0.0',
  vendor: 'OpenZFS',
  arrayModel: 'zfs-fuse',
  softwareVersions: ['0.7.0'],
  protocol: 1,
  mamoriVersions: ['0.1.0'],
  conformance: { result: 'pass', date: '2026-11-27T18:00:00.000Z', passed: 15, failed: 0 },
  ...over,
});
const guide = (...entries: CompatEntry[]): CompatGuide => ({ format: 1, entries });

test('a guide that does not parse, or is wrong in any field, is refused with what is wrong', () => {
  assert.throws(
    () => parseCompatGuide('{"format":1,"entries":[', 'g.json'),
    /compatibility guide g\.json does not parse: .*JSON/,
  );
  assert.throws(
    () => parseCompatGuide('{"format":2,"entries":[]}', 'g.json'),
    /must be \{"format":1,"entries":\[\.\.\.\]\}/,
  );
  assert.throws(
    () => parseCompatGuide(JSON.stringify(guide(row({ arrayModel: '' }))), 'g.json'),
    /entry 1 has no arrayModel/,
  );
  assert.throws(
    () => parseCompatGuide(JSON.stringify(guide(row(), row({ softwareVersions: [] }))), 'g.json'),
    /entry 2 must list softwareVersions/,
  );
  assert.throws(
    () => parseCompatGuide(JSON.stringify(guide(row({ protocol: 2 }))), 'g.json'),
    /names protocol 2; this mamori speaks 1/,
  );
  assert.throws(
    () => parseCompatGuide(JSON.stringify(guide(row({ conformance: { result: 'maybe' } as never }))), 'g.json'),
    /has no conformance result/,
  );
  assert.deepEqual(parseCompatGuide(JSON.stringify(guide(row())), 'g.json').entries.length, 1);
});

test('check says supported, or the first thing that differs from a tested row', () => {
  const g = guide(row(), row({ arrayModel: 'OpenZFS', softwareVersions: ['2.1.11'] }));
  const zfs = { name: 'zfs', version: '1.0.0' };
  assert.deepEqual(checkCompat(g, zfs, { model: 'zfs-fuse', softwareVersion: '0.7.0' }).supported, true);
  assert.match(
    checkCompat(g, zfs, { model: 'NetApp FAS', softwareVersion: '9.1' }).reason,
    /NetApp FAS with the zfs adapter is not in the compatibility guide \(it lists zfs-fuse, OpenZFS\)/,
  );
  assert.match(
    checkCompat(g, zfs, { model: 'zfs-fuse', softwareVersion: '0.6.9' }).reason,
    /zfs-fuse software 0\.6\.9 is not listed; tested: 0\.7\.0/,
  );
  assert.match(
    checkCompat(g, { name: 'zfs', version: '2.0.0' }, { model: 'zfs-fuse', softwareVersion: '0.7.0' }).reason,
    /adapter zfs 2\.0\.0 is not listed for it; tested: 1\.0\.0/,
  );
  assert.match(
    checkCompat(g, zfs, { model: 'zfs-fuse', softwareVersion: '0.7.0' }, '0.2.0').reason,
    /tested with mamori 0\.1\.0, not 0\.2\.0/,
  );
  const failed = guide(
    row({ conformance: { result: 'fail', date: '2026-11-27T18:00:00.000Z', passed: 7, failed: 1 } }),
  );
  assert.match(
    checkCompat(failed, zfs, { model: 'zfs-fuse', softwareVersion: '0.7.0' }).reason,
    /its conformance run of 2026-11-27T18:00:00\.000Z failed/,
  );
});

test('a recorded run replaces its own row only; search filters by adapter and model, case-insensitively', () => {
  const g = recordCompat(
    guide(row(), row({ arrayModel: 'OpenZFS', softwareVersions: ['2.1.11'] })),
    row({ conformance: { result: 'fail', date: 'd', passed: 1, failed: 1 } }),
  );
  assert.equal(g.entries.length, 2);
  assert.equal(g.entries.find((e) => e.arrayModel === 'zfs-fuse')!.conformance.result, 'fail');
  assert.deepEqual(
    searchCompat(g, { array: 'openzfs' }).map((e) => e.arrayModel),
    ['OpenZFS'],
  );
  assert.equal(searchCompat(g, { adapter: 'netapp' }).length, 0);
});

test('the shipped guide parses', async () => {
  const shipped = await readCompatGuide();
  assert.equal(shipped.format, 1);
});

// OpenZFS pools: model zpool, no pool version, feature flags (what the zfs adapter reports).
const zfs = { name: 'zfs', version: '1.0.0' };
const legacy = row({ vendor: 'mamori', arrayModel: 'zpool', softwareVersions: ['pool version 23'] });
const set22 = row({
  vendor: 'mamori',
  arrayModel: 'zpool',
  softwareVersions: ['OpenZFS 2.2.2'],
  featureSet: 'openzfs-2.2',
});
const listed = row({
  vendor: 'mamori',
  arrayModel: 'zpool',
  softwareVersions: ['OpenZFS 2.1.5'],
  requiredFeatures: ['bookmarks', 'extensible_dataset'],
});
const pool = (features: readonly string[], softwareVersion = 'OpenZFS 2.2.6') => ({
  model: 'zpool',
  softwareVersion,
  features,
});

test('a row naming an OpenZFS feature set matches a pool with every feature of the set, whatever its release', () => {
  const g = guide(legacy, set22);
  assert.equal(checkCompat(g, zfs, pool(OPENZFS_FEATURE_SETS['openzfs-2.2']!)).supported, true);
  assert.equal(
    checkCompat(g, zfs, pool([...OPENZFS_FEATURE_SETS['openzfs-2.3']!], 'OpenZFS 2.3.1')).supported,
    true,
    "a newer pool has the set's features and more",
  );
  const v21 = checkCompat(g, zfs, pool(OPENZFS_FEATURE_SETS['openzfs-2.1-linux']!, 'OpenZFS 2.1.11'));
  assert.equal(v21.supported, false);
  assert.match(
    v21.reason,
    /^zpool \(OpenZFS 2\.1\.11\) lacks features blake3, block_cloning, head_errlog, vdev_zaps_v2, zilsaxattr of the tested feature set openzfs-2\.2; tested: pool version 23; feature set openzfs-2\.2$/,
  );
  assert.equal(
    checkCompat(g, zfs, { model: 'zpool', softwareVersion: 'OpenZFS 2.2.2' }).supported,
    false,
    'a row with features never matches by its software version alone',
  );
});

test('a row listing required features matches any pool that has them; the reason names the one missing', () => {
  const g = guide(listed);
  assert.equal(checkCompat(g, zfs, pool(['async_destroy', 'bookmarks', 'extensible_dataset'])).supported, true);
  assert.match(
    checkCompat(g, zfs, pool(['async_destroy', 'bookmarks'])).reason,
    /lacks feature extensible_dataset of the tested 2 required features/,
  );
  assert.deepEqual(
    requiredFeaturesOf(row({ featureSet: 'openzfs-2.0-linux', requiredFeatures: ['zz_extra'] }))!.length,
    34,
    'a set and a list add up',
  );
});

test('version rows keep matching legacy pools, and only them', () => {
  const g = guide(legacy, set22);
  assert.equal(
    checkCompat(g, zfs, { model: 'zpool', softwareVersion: 'pool version 23', features: [] }).supported,
    true,
  );
  assert.match(
    checkCompat(g, zfs, { model: 'zpool', softwareVersion: 'pool version 28', features: [] }).reason,
    /^zpool software pool version 28 is not listed; tested: pool version 23; feature set openzfs-2\.2$/,
  );
  assert.match(
    checkCompat(guide(legacy), zfs, pool(['bookmarks'], 'feature flags')).reason,
    /^zpool software feature flags with 1 features is not listed; tested: pool version 23$/,
  );
  // Past the software the rest of the check is the same: adapter version, then mamori.
  assert.match(
    checkCompat(g, { name: 'zfs', version: '2.0.0' }, pool(OPENZFS_FEATURE_SETS['openzfs-2.2']!)).reason,
    /adapter zfs 2\.0\.0 is not listed for it; tested: 1\.0\.0/,
  );
});

test('a guide row with an unknown feature set or an empty feature list is refused', () => {
  assert.throws(
    () => parseCompatGuide(JSON.stringify(guide(row({ featureSet: 'openzfs-9.9' }))), 'g.json'),
    /entry 1 names feature set "openzfs-9\.9"; known sets: openzfs-2\.0-linux, openzfs-2\.1-linux, openzfs-2\.2, openzfs-2\.3/,
  );
  assert.throws(
    () => parseCompatGuide(JSON.stringify(guide(row({ requiredFeatures: [] }))), 'g.json'),
    /entry 1: requiredFeatures must be a non-empty list/,
  );
  assert.equal(parseCompatGuide(JSON.stringify(guide(set22, listed)), 'g.json').entries.length, 2);
});

test("a run records the pool's features: the set's name when they are exactly one, else all of them; each feature set is its own row", () => {
  assert.deepEqual(featuresForRow([...OPENZFS_FEATURE_SETS['openzfs-2.1-linux']!].reverse()), {
    featureSet: 'openzfs-2.1-linux',
  });
  assert.deepEqual(featuresForRow(['lz4_compress', 'bookmarks', 'bookmarks']), {
    requiredFeatures: ['bookmarks', 'lz4_compress'],
  });
  assert.deepEqual(featuresForRow([]), {});
  assert.deepEqual(featuresForRow(undefined), {});
  const g = recordCompat(guide(legacy, set22), row({ ...set22, featureSet: 'openzfs-2.1-linux' }));
  assert.deepEqual(
    g.entries.map((e) => e.featureSet ?? e.softwareVersions[0]),
    ['pool version 23', 'openzfs-2.2', 'openzfs-2.1-linux'],
  );
  const again = recordCompat(g, row({ ...set22, conformance: { result: 'fail', date: 'd', passed: 1, failed: 1 } }));
  assert.equal(again.entries.length, 3, 'the same set again replaces its row');
  assert.equal(again.entries.find((e) => e.featureSet === 'openzfs-2.2')!.conformance.result, 'fail');
});

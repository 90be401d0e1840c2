import { test } from 'node:test';
import assert from 'node:assert/strict';
import { seedSides, type SeedDelta } from '../../../src/replication/seed-delta.js';

const T0 = '2026-12-05T10:00:00.000Z';
const T1 = '2026-12-05T10:05:00.000Z';
const extents = [{ offset: 65536, length: 65536 }];

test('a VM that did not start from a replica point (live migration) sends its bitmap alone', () => {
  assert.equal(seedSides({ disks: [{ known: true, since: T0, extents }] }, null, 1), null);
});

test("the old side's writes since a point no newer than the VM's start point are sent besides the bitmap", () => {
  const delta: SeedDelta = {
    disks: [
      { known: true, since: T0, extents },
      { known: true, since: T0, extents: [] },
    ],
  };
  assert.deepEqual(seedSides(delta, T0, 2), [
    { kind: 'extents', extents },
    { kind: 'extents', extents: [] },
  ]);
  // The old site missed the commit of the newer point the VM started from: its bitmap still covers everything since.
  assert.deepEqual(seedSides(delta, T1, 2)?.[0], { kind: 'extents', extents });
});

test("a lost bitmap, a missing delta, or a start point older than the old side's last one: checksums for that side only", () => {
  const delta: SeedDelta = {
    disks: [
      { known: false, reason: 'the bitmap of point generation 4 is inconsistent' },
      { known: true, since: T0, extents },
    ],
  };
  const sides = seedSides(delta, T0, 3)!;
  assert.deepEqual(sides[0], { kind: 'checksums', reason: 'the bitmap of point generation 4 is inconsistent' });
  assert.deepEqual(sides[1], { kind: 'extents', extents });
  assert.equal(sides[2]!.kind, 'checksums', 'a disk the delta does not list');
  assert.ok(
    seedSides(null, T0, 2)!.every((s) => s.kind === 'checksums'),
    'no delta recorded at all',
  );
  const older = seedSides({ disks: [{ known: true, since: T1, extents }] }, T0, 1)![0]!;
  assert.equal(
    older.kind,
    'checksums',
    "the bitmap does not cover the points between the start point and the old side's last",
  );
});

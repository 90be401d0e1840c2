import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { chainImageSpec } from '../../../src/replication/chain-images.js';
import { parseManifest } from '../../../src/replication/replica-manifest.js';

describe('chainImageSpec', () => {
  it('nests layers bottom-up with explicit backing and no backing below the base', () => {
    const spec = chainImageSpec([
      { file: '/r/base.qcow2', format: 'qcow2' },
      { file: '/r/p1.qcow2', format: 'qcow2' },
    ]);
    assert.ok(spec.startsWith('json:'));
    assert.deepEqual(JSON.parse(spec.slice(5)), {
      driver: 'qcow2',
      file: { driver: 'file', filename: '/r/p1.qcow2' },
      backing: { driver: 'qcow2', file: { driver: 'file', filename: '/r/base.qcow2' }, backing: null },
    });
  });

  it('refuses an empty chain and a raw layer on top', () => {
    assert.throws(
      () => chainImageSpec([]),
      (e) => isMamoriError(e, 'INVALID_INPUT'),
    );
    assert.throws(
      () =>
        chainImageSpec([
          { file: '/a', format: 'qcow2' },
          { file: '/b', format: 'raw' },
        ]),
      (e) => isMamoriError(e, 'INVALID_INPUT'),
    );
  });
});

describe('parseManifest', () => {
  const good = {
    format: 'mamori-replica-chain',
    version: 1,
    virtualSize: 4194304,
    base: 'base.qcow2',
    nextSeq: 3,
    points: [
      {
        id: 'p000002',
        seq: 2,
        file: 'p000002.qcow2',
        time: '2026-01-01T00:00:00.000Z',
        consistency: 'crash',
        committedAt: '2026-01-01T00:00:01.000Z',
      },
    ],
  };

  it('accepts a valid manifest', () => {
    assert.deepEqual(parseManifest(JSON.stringify(good), '/r'), good);
  });

  it('refuses garbage, other formats, bad points', () => {
    const corrupt = (text: string) =>
      assert.throws(
        () => parseManifest(text, '/r'),
        (e) => isMamoriError(e, 'IMAGE_CORRUPT'),
      );
    corrupt('{');
    corrupt(JSON.stringify({ ...good, version: 2 }));
    corrupt(JSON.stringify({ ...good, points: [{ ...good.points[0], file: '../etc/passwd' }] }));
    corrupt(JSON.stringify({ ...good, points: [{ ...good.points[0], consistency: 'maybe' }] }));
    corrupt(JSON.stringify({ ...good, nextSeq: 2 }));
  });
});

import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ExtentOverlayMap } from '../../../src/cdp/extent-overlay-map.js';

/** The map against a byte-per-byte model, over random overlapping ranges. */
describe('ExtentOverlayMap', () => {
  it('reads, for every byte, the last record that covered it', () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const SIZE = 4096;
    for (let round = 0; round < 20; round++) {
      const model = new Int32Array(SIZE).fill(-1);
      const map = new ExtentOverlayMap();
      for (let seq = 1; seq <= 200; seq++) {
        const start = rand(SIZE);
        const end = Math.min(SIZE, start + 1 + rand(300));
        map.apply(start, end, seq);
        model.fill(seq, start, end);
      }
      const seen = new Int32Array(SIZE).fill(-1);
      let last = 0;
      for (const x of map.overlapping(0, SIZE)) {
        assert.ok(x.start >= last && x.end > x.start, 'sorted, not overlapping, not empty');
        seen.fill(x.seq, x.start, x.end);
        last = x.end;
      }
      assert.deepEqual(seen, model);
      // A window inside is clipped to it.
      const w = map.overlapping(1000, 1100);
      for (const x of w) assert.ok(x.start >= 1000 && x.end <= 1100);
    }
  });

  it('splits an extent a later record lands inside', () => {
    const map = new ExtentOverlayMap();
    map.apply(0, 100, 1);
    map.apply(40, 60, 2);
    assert.deepEqual(map.overlapping(0, 100), [
      { start: 0, end: 40, seq: 1 },
      { start: 40, end: 60, seq: 2 },
      { start: 60, end: 100, seq: 1 },
    ]);
    map.apply(0, 100, 3);
    assert.deepEqual(map.overlapping(0, 200), [{ start: 0, end: 100, seq: 3 }]);
    map.apply(5, 5, 4);
    assert.equal(map.size, 1, 'an empty range changes nothing');
  });
});

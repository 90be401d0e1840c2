import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  bitmapName,
  canPersistBitmaps,
  fleeceBitmapName,
  generationOf,
  judgeBitmaps,
  type BitmapInfo,
} from '../../../src/replication/dirty-bitmaps.js';
import { fleecingActions, type FleecedDisk } from '../../../src/replication/fleecing-point.js';

function bm(name: string, over: Partial<BitmapInfo> = {}): BitmapInfo {
  return {
    name,
    granularity: 65536,
    recording: true,
    persistent: true,
    inconsistent: false,
    busy: false,
    count: 0,
    ...over,
  };
}

describe('bitmap names', () => {
  it('round-trips generations and keeps temporaries apart', () => {
    assert.equal(bitmapName(7), 'mamori-7');
    assert.equal(fleeceBitmapName(7), 'mamori-7-fleece');
    assert.equal(generationOf('mamori-7'), 7);
    assert.equal(generationOf('mamori-7-fleece'), null);
    assert.equal(generationOf('backup-1'), null);
  });

  it('only qcow2 persists bitmaps', () => {
    assert.equal(canPersistBitmaps('qcow2'), true);
    assert.equal(canPersistBitmaps('raw'), false);
    assert.equal(canPersistBitmaps('file'), false);
    assert.equal(canPersistBitmaps('host_device'), false);
  });
});

describe('judgeBitmaps', () => {
  it('never replicated: full, and every mamori leftover is stale; foreign bitmaps are left alone', () => {
    const v = judgeBitmaps([bm('mamori-3'), bm('mamori-3-fleece'), bm('libvirt-1')], null);
    assert.equal(v.mode, 'full');
    assert.deepEqual(v.stale, ['mamori-3', 'mamori-3-fleece']);
  });

  it("the previous bitmap healthy: incremental; a cut cycle's bitmaps are stale", () => {
    const v = judgeBitmaps([bm('mamori-4'), bm('mamori-5'), bm('mamori-5-fleece', { recording: false })], 4);
    assert.equal(v.mode, 'incremental');
    assert.equal(v.previous?.name, 'mamori-4');
    assert.deepEqual(v.stale, ['mamori-5', 'mamori-5-fleece']);
  });

  it('missing, inconsistent or disabled: resync, and the untrustworthy bitmap goes too', () => {
    assert.deepEqual(judgeBitmaps([], 2), { mode: 'resync', reason: 'missing', previous: null, stale: [] });
    const inc = judgeBitmaps([bm('mamori-2', { inconsistent: true, recording: false })], 2);
    assert.equal(inc.mode, 'resync');
    assert.equal(inc.reason, 'inconsistent');
    assert.deepEqual(inc.stale, ['mamori-2']);
    assert.equal(judgeBitmaps([bm('mamori-2', { recording: false })], 2).reason, 'not-recording');
    assert.equal(judgeBitmaps([bm('mamori-1')], 2).reason, 'missing');
  });
});

describe('fleecingActions', () => {
  const disk = (node: string, incremental: boolean, persistent: boolean): FleecedDisk => ({
    node,
    driver: persistent ? 'qcow2' : 'raw',
    virtualSize: 1 << 20,
    mode: incremental ? 'incremental' : 'full',
    resyncReason: null,
    exportName: `f-${node}`,
    fleeceNode: `f-${node}`,
    fleeceFileNode: `f-${node}-file`,
    fleeceFile: `/w/f-${node}.qcow2`,
    jobId: `f-${node}-job`,
    bitmap: 'mamori-3',
    persistent,
    previousBitmap: incremental ? 'mamori-2' : null,
    fleeceBitmap: incremental ? 'mamori-3-fleece' : null,
    metaContext: incremental ? 'qemu:dirty-bitmap:mamori-3-fleece' : null,
  });

  it('one transaction: new bitmap, disabled copy of the previous one, backup sync=none; per disk', () => {
    const nodes = new Map([
      ['disk0', { bitmaps: [{ name: 'mamori-2', granularity: 4096 }] }],
      ['disk1', { bitmaps: [] }],
    ]);
    const actions = fleecingActions([disk('disk0', true, true), disk('disk1', false, false)], 65536, nodes);
    assert.deepEqual(actions, [
      {
        type: 'block-dirty-bitmap-add',
        data: { node: 'disk0', name: 'mamori-3', persistent: true, granularity: 65536 },
      },
      {
        type: 'block-dirty-bitmap-add',
        data: { node: 'disk0', name: 'mamori-3-fleece', persistent: false, disabled: true, granularity: 4096 },
      },
      { type: 'block-dirty-bitmap-merge', data: { node: 'disk0', target: 'mamori-3-fleece', bitmaps: ['mamori-2'] } },
      { type: 'blockdev-backup', data: { device: 'disk0', target: 'f-disk0', sync: 'none', 'job-id': 'f-disk0-job' } },
      {
        type: 'block-dirty-bitmap-add',
        data: { node: 'disk1', name: 'mamori-3', persistent: false, granularity: 65536 },
      },
      { type: 'blockdev-backup', data: { device: 'disk1', target: 'f-disk1', sync: 'none', 'job-id': 'f-disk1-job' } },
    ]);
  });
});

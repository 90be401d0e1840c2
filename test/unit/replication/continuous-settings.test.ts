import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { continuousSettings } from '../../../src/replication/continuous-settings.js';

describe('continuous replication settings', () => {
  it('defaults to a checkpoint a second and a 4 h window, and reads each unit', () => {
    assert.equal(continuousSettings({}, false), null, 'cycles only without --continuous');
    assert.deepEqual(continuousSettings({ continuous: true }, false), {
      checkpointMs: 1000,
      journalMs: 4 * 3600_000,
      appCheckpointMs: null,
    });
    assert.deepEqual(continuousSettings({ continuous: true, checkpoint: '500ms', journal: '2d' }, false), {
      checkpointMs: 500,
      journalMs: 2 * 86_400_000,
      appCheckpointMs: null,
    });
    assert.deepEqual(continuousSettings({ continuous: true, checkpoint: '5', journal: '90m' }, false), {
      checkpointMs: 5000,
      journalMs: 90 * 60_000,
      appCheckpointMs: null,
    });
  });

  it('takes application-consistent checkpoints every 15 min where the VM has a guest agent, as asked, or none', () => {
    assert.equal(continuousSettings({ continuous: true }, true)!.appCheckpointMs, 15 * 60_000);
    assert.equal(continuousSettings({ continuous: true, appCheckpoint: '10s' }, true)!.appCheckpointMs, 10_000);
    assert.equal(continuousSettings({ continuous: true, appCheckpoint: '1h' }, true)!.appCheckpointMs, 3600_000);
    assert.equal(continuousSettings({ continuous: true, appCheckpoint: 'off' }, true)!.appCheckpointMs, null);
    assert.equal(continuousSettings({ continuous: true, appCheckpoint: 'off' }, false)!.appCheckpointMs, null);
    for (const appCheckpoint of ['9s', '25h', 'hourly'])
      assert.throws(
        () => continuousSettings({ continuous: true, appCheckpoint }, true),
        (e) => isMamoriError(e, 'OUT_OF_RANGE'),
        appCheckpoint,
      );
    // Asked for on a VM that cannot freeze: refused, not silently crash-consistent.
    assert.throws(
      () => continuousSettings({ continuous: true, appCheckpoint: '15m' }, false),
      (e) => isMamoriError(e, 'INVALID_INPUT') && /agent/.test(e.message),
    );
    assert.throws(
      () => continuousSettings({ appCheckpoint: '15m' }, true),
      (e) => isMamoriError(e, 'INVALID_INPUT'),
    );
  });

  it('refuses what is out of range or not a duration, and settings without --continuous', () => {
    for (const input of [
      { continuous: true, checkpoint: '199ms' },
      { continuous: true, checkpoint: '61s' },
      { continuous: true, checkpoint: 'soon' },
      { continuous: true, journal: '59s' },
      { continuous: true, journal: '31d' },
      { continuous: true, journal: '-4h' },
    ])
      assert.throws(
        () => continuousSettings(input, false),
        (e) => isMamoriError(e, 'OUT_OF_RANGE'),
        JSON.stringify(input),
      );
    assert.throws(
      () => continuousSettings({ journal: '4h' }, false),
      (e) => isMamoriError(e, 'INVALID_INPUT'),
    );
  });
});

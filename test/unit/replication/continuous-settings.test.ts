import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { continuousSettings } from '../../../src/replication/continuous-settings.js';

describe('continuous replication settings', () => {
  it('defaults to a checkpoint a second and a 4 h window, and reads each unit', () => {
    assert.equal(continuousSettings({}), null, 'cycles only without --continuous');
    assert.deepEqual(continuousSettings({ continuous: true }), { checkpointMs: 1000, journalMs: 4 * 3600_000 });
    assert.deepEqual(continuousSettings({ continuous: true, checkpoint: '500ms', journal: '2d' }), {
      checkpointMs: 500,
      journalMs: 2 * 86_400_000,
    });
    assert.deepEqual(continuousSettings({ continuous: true, checkpoint: '5', journal: '90m' }), {
      checkpointMs: 5000,
      journalMs: 90 * 60_000,
    });
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
        () => continuousSettings(input),
        (e) => isMamoriError(e, 'OUT_OF_RANGE'),
        JSON.stringify(input),
      );
    assert.throws(
      () => continuousSettings({ journal: '4h' }),
      (e) => isMamoriError(e, 'INVALID_INPUT'),
    );
  });
});

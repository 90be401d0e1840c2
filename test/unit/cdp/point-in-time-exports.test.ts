import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { JournalPointServer } from '../../../src/cdp/journal-point-server.js';
import { PointInTimeExports, exportBackingName } from '../../../src/cdp/point-in-time-exports.js';

/*
 * The registry of point-in-time exports, with a fake server (the real one is proven on QEMU in
 * test/integration/cdp): one export per instant shared by its VMs, closed with the last of them,
 * found again from an overlay's header after a restart.
 */
describe('point-in-time exports', () => {
  let root: string;
  const opened: string[] = [];
  const closed: string[] = [];
  const fake = (dir: string): JournalPointServer =>
    ({
      close: async () => {
        closed.push(dir);
      },
    }) as unknown as JournalPointServer;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mamori-pit-unit-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  const make = (fail = false): PointInTimeExports =>
    new PointInTimeExports({
      root: join(root, 'pit'),
      open: async (key, dir) => {
        if (fail) throw new Error('the journal no longer holds it');
        opened.push(`${key.replicaId}@${key.timeUs}`);
        await mkdir(dir, { recursive: true });
        return fake(dir);
      },
    });

  it('serves an instant once for all its VMs and closes it with the last one', async () => {
    const exports = make();
    const key = { replicaId: 'rep-1', timeUs: 1_700_000_000_123_456 };
    await exports.acquire(key, 'vm-a');
    await exports.acquire(key, 'vm-b');
    await exports.acquire({ replicaId: 'rep-1', timeUs: 1_700_000_001_000_000 }, 'vm-c');
    assert.deepEqual(opened, ['rep-1@1700000000123456', 'rep-1@1700000001000000']);
    assert.deepEqual(
      exports
        .users()
        .map((u) => u.user)
        .sort(),
      ['vm-a', 'vm-b', 'vm-c'],
    );
    await exports.release('vm-a');
    assert.deepEqual(closed, [], 'vm-b still stands on it');
    await exports.release('vm-a'); // idempotent
    await exports.release('vm-b');
    assert.deepEqual(closed, [exports.folder(key)]);
    assert.deepEqual(await readdir(join(root, 'pit')), [
      exports.folder({ replicaId: 'rep-1', timeUs: 1_700_000_001_000_000 }).split('/').at(-1),
    ]);
    await exports.closeAll();
    assert.deepEqual(await readdir(join(root, 'pit')), []);
    assert.deepEqual(exports.users(), []);
  });

  it('names the same folder for the same instant across restarts, and reads its own backing names back', () => {
    const key = { replicaId: 'rep-2', timeUs: 42 };
    assert.equal(make().folder(key), make().folder(key));
    assert.notEqual(make().folder(key), make().folder({ ...key, timeUs: 43 }));
    const exports = make();
    const name = exports.backingName(key, 'disk1');
    assert.deepEqual(exports.parseBacking(name), {
      socketPath: join(exports.folder(key), 'point.sock'),
      exportName: 'disk1',
    });
    // Not one of this site's: another folder, a plain file, no backing, junk.
    assert.equal(exports.parseBacking(exportBackingName('/elsewhere/point.sock', 'disk0', 1)), null);
    assert.equal(exports.parseBacking('/var/lib/mamori/replicas/r/disk0/p1.qcow2'), null);
    assert.equal(exports.parseBacking(null), null);
    assert.equal(exports.parseBacking('json:{not json'), null);
  });

  it('keeps a VM still being made out of its users until it is confirmed', async () => {
    const exports = make();
    const key = { replicaId: 'rep-4', timeUs: 7 };
    await exports.acquire(key, 'vm-new', { pending: true });
    assert.deepEqual(exports.users(), [], 'not on record yet: no watch may take it for gone');
    exports.confirm('vm-new');
    assert.deepEqual(exports.users(), [{ user: 'vm-new', key }]);
    await exports.closeAll();
  });

  it('lets go of nothing when the instant cannot be served', async () => {
    const exports = make(true);
    await assert.rejects(exports.acquire({ replicaId: 'rep-3', timeUs: 1 }, 'vm-x'), /no longer holds/);
    assert.deepEqual(exports.users(), []);
  });

  it('refuses a data folder too long for the socket', () => {
    const exports = new PointInTimeExports({ root: `/${'x'.repeat(120)}`, open: () => Promise.reject(new Error()) });
    assert.throws(() => exports.backingName({ replicaId: 'r', timeUs: 1 }, 'disk0'), /too long/);
  });
});

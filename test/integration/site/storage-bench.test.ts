import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess } from '../../harness/site-process.js';
import type { StorageBenchResult } from '../../../src/disks/storage-bench.js';

/*
 * `mamori bench storage` end to end, small: a real test guest under TCG measures a qcow2
 * image, a raw image and two RDMs (loop devices over files of the same pool), and everything
 * the benchmark made is gone afterwards: VM, disk rows, files, loop devices. The figures
 * themselves are bench/storage's business (make bench); this checks the behaviour.
 */
let site: SiteProcess;

before(async () => {
  site = await SiteProcess.create('site-bench');
  await site.start();
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    await site.destroy();
  }
});

test('the storage benchmark measures every disk kind in one guest and leaves nothing behind', async () => {
  const bad = await site.cli('bench', 'storage', '--mib', '8');
  assert.match(bad.stderr, /mib must be a whole number from 16 to 16384.*\[OUT_OF_RANGE\]/);

  const r = await site.cliJson<StorageBenchResult>('bench', 'storage', '--mib', '16', '--seconds', '1');
  for (const kind of ['qcow2', 'raw', 'rdm-virtual', 'rdm-physical'] as const) {
    const f = r.kinds[kind];
    assert.ok(
      f.seq_read_mbps > 0 && f.seq_write_mbps > 0 && f.rand_read_iops > 0 && f.rand_write_iops > 0,
      `${kind}: ${JSON.stringify(f)}`,
    );
  }
  assert.equal(Object.keys(r.ratios).length, 8, 'four figures for each RDM mode, over qcow2');

  assert.deepEqual(await site.cliJson('vm', 'list'), []);
  assert.deepEqual(await site.cliJson('disk', 'list'), []);
  assert.deepEqual(
    (await readdir(join(site.dataDir, 'pools', 'default'))).filter((f) => f.startsWith('bench-')),
    [],
  );
  const loops = (
    await runProcess('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE'], { timeoutMs: 30_000 })
  ).stdout;
  assert.ok(!loops.includes(site.dataDir), `no loop device over this site's files is left: ${loops}`);
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess } from '../../harness/site-process.js';
import { assertRolledBack, cutAtStep, killProcessesOver, leftovers } from '../../harness/job-kill-conv.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { DiskRecord } from '../../../src/disks/disk-record.js';

/*
 * Kill -9 at every step of a disk import (convert, register): a fault point `job:KIND:STEP`
 * SIGKILLs the server after the step's work and before the journal says done. The kind rolls
 * back: after the restart the job is failed saying what was removed; no disk row, image file,
 * temporary file or QEMU of it is left; and the same import then succeeds. One site, restarted
 * per cut. (The storage benchmark's cuts are in storage-bench-kill-steps.test.ts.)
 */
let site: SiteProcess;
let dir: string;
let source: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-import-kill-'));
  // 32 MiB of non-zero data, so the copy is checked byte for byte afterwards.
  source = join(dir, 'src.raw');
  const fh = await open(source, 'w');
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < chunk.length; i += 4096) chunk.writeUInt32LE(i + 7, i);
  for (let off = 0; off < 32 * 1024 * 1024; off += chunk.length) await fh.write(chunk, 0, chunk.length, off);
  await fh.close();
  site = await SiteProcess.create('site-ik');
  await site.start();
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    const data = site.dataDir;
    await site.destroy();
    await killProcessesOver(data);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

for (const step of ['convert', 'register']) {
  test(`disk-import cut after '${step}': rolled back, no row, no image, no temporary file`, async () => {
    const { job } = await cutAtStep(site, 'disk-import', step, () =>
      site.cli('--json', 'disk', 'import', 'imp', source),
    );
    assertRolledBack(
      job,
      step === 'register'
        ? /disk imp was registered; it was removed again/
        : /import of disk imp; its temporary copy was removed/,
    );
    assert.deepEqual(await site.cliJson<DiskRecord[]>('disk', 'list'), []);
    assert.deepEqual(await readdir(join(site.dataDir, 'pools', 'default')), [], 'neither imp.qcow2 nor its temporary');
    assert.deepEqual(await leftovers(site), []);
  });
}

test('after every cut, the same import succeeds and equals its source', async () => {
  const job = await site.cliJson<Job>('disk', 'import', 'imp', source);
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  const disk = await site.cliJson<DiskRecord>('disk', 'show', 'imp');
  const cmp = await runProcess('qemu-img', ['compare', '-f', 'raw', '-F', disk.format, source, disk.path], {
    timeoutMs: 120_000,
    okCodes: [0, 1],
  });
  assert.equal(cmp.code, 0, cmp.stdout);
  await site.cliJson('disk', 'delete', 'imp');
  assert.deepEqual(await leftovers(site), []);
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess } from '../../harness/site-process.js';
import { mbrRhel6 } from '../../harness/disk-fixtures.js';
import { assertRolledBack, cutAtStep, killProcessesOver, leftovers } from '../../harness/job-kill-conv.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { DiskRecord } from '../../../src/disks/disk-record.js';
import type { ExportResult } from '../../../src/convert/export-service.js';

/*
 * Kill -9 at every step of a conversion (image path: copy, register, start) and of an OVA
 * export (copy, package, publish), each a fault point `job:KIND:STEP` that SIGKILLs the server
 * after the step's work and before the journal says done. Both kinds roll back: after the
 * restart the job is failed saying what was removed, no VM, disk, file, scratch folder or QEMU
 * of it is left, and the same operation then succeeds. One site for the file, restarted per cut.
 * No replica point is involved in these kinds, so none can be lost.
 */
let site: SiteProcess;
let dir: string;
let fixture: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-convert-kill-'));
  fixture = await mbrRhel6(dir);
  site = await SiteProcess.create('site-ck');
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

const convertArgs = (): string[] => ['convert', fixture, '--name', 'conv', '--start', '--memory', '128'];

for (const step of ['copy', 'register', 'start']) {
  test(`vm-convert cut after '${step}': rolled back, nothing of it left`, async () => {
    const { job } = await cutAtStep(site, 'vm-convert', step, () => site.cli('--json', ...convertArgs()));
    assertRolledBack(job, step === 'copy' ? /partial copy was removed/ : /VM conv it had registered .* removed/);
    const vms = await site.cliJson<VmView[]>('vm', 'list');
    assert.deepEqual(
      vms.map((v) => v.name),
      [],
      'no VM named conv (a duplicate would follow on the rerun)',
    );
    assert.deepEqual(await site.cliJson<DiskRecord[]>('disk', 'list'), [], 'no copied disk stays');
    // The copy's own disk-import job finished before the cut: it is not left running either.
    const jobs = await site.cliJson<Job[]>('job', 'list');
    assert.deepEqual(
      jobs.filter((j) => j.state === 'running').map((j) => `${j.kind} ${j.id}`),
      [],
    );
    assert.deepEqual(await leftovers(site), []);
  });
}

test('after every cut, the same conversion succeeds and its disk equals the source', async () => {
  const r = await site.cli('--json', ...convertArgs());
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 2000));
  const job = JSON.parse(r.stdout) as Job;
  assert.equal(job.state, 'succeeded');
  const vm = await site.cliJson<VmView>('vm', 'show', 'conv');
  assert.equal(vm.state, 'running');
  site.trackPid(vm.pid!);
  // Off first: QEMU holds the image's write lock while it runs.
  await site.cliJson('vm', 'kill', 'conv');
  const cmp = await runProcess(
    'qemu-img',
    ['compare', '-f', 'raw', '-F', vm.disks[0]!.format, fixture, vm.disks[0]!.path],
    { timeoutMs: 120_000, okCodes: [0, 1] },
  );
  assert.equal(cmp.code, 0, cmp.stdout);
  assert.deepEqual(await leftovers(site), []);
});

for (const step of ['copy', 'package', 'publish']) {
  test(`vm-export (ova) cut after '${step}': rolled back, no scratch and no file under the final name`, async () => {
    const disksBefore = await site.cliJson<DiskRecord[]>('disk', 'list');
    const { job } = await cutAtStep(site, 'vm-export', step, () =>
      site.cli('--json', 'export', 'conv', '--format', 'ova'),
    );
    assertRolledBack(job, step === 'publish' ? /put in place; its files were removed/ : /partial files were removed/);
    assert.deepEqual(await readdir(join(site.dataDir, 'exports')), [], 'neither scratch nor conv.ova');
    // The VM exported is untouched: same disks, still stopped.
    assert.deepEqual(await site.cliJson<DiskRecord[]>('disk', 'list'), disksBefore);
    assert.equal((await site.cliJson<VmView>('vm', 'show', 'conv')).state, 'stopped');
    assert.deepEqual(await leftovers(site), []);
  });
}

test('after every cut, the same export succeeds', async () => {
  const r = await site.cli('--json', 'export', 'conv', '--format', 'ova');
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 2000));
  const job = JSON.parse(r.stdout) as Job & { result: ExportResult };
  assert.equal(job.state, 'succeeded');
  assert.deepEqual(job.result.files, [join(site.dataDir, 'exports', 'conv.ova')]);
  assert.deepEqual(await readdir(join(site.dataDir, 'exports')), ['conv.ova']);
});

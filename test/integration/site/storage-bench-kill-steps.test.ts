import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess, type CliResult } from '../../harness/site-process.js';
import { alive } from '../../harness/job-kill-repl.js';
import {
  assertRolledBack,
  cutAtStep,
  killProcessesOver,
  leftovers,
  processesOver,
} from '../../harness/job-kill-conv.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { StorageBenchResult } from '../../../src/disks/storage-bench.js';

/*
 * Kill -9 at every step of a storage benchmark (disks, guest, cleanup), each a fault point
 * `job:storage-bench:STEP` that SIGKILLs the server after the step's work and before the
 * journal says done. Policy rollback: after the restart the job is failed with a message
 * saying what was removed, and nothing the run made is left: no VM, disk row, scratch file
 * (the RDMs' raw files in the pool), loop device, or QEMU (the bench guest's pid, seen while
 * the server was down, is gone). The next benchmark then succeeds. One site, restarted per cut.
 * No replica point is involved in this kind, so none can be lost.
 */
let site: SiteProcess;

before(async () => {
  site = await SiteProcess.create('site-benchk');
  await site.start();
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    const data = site.dataDir;
    await site.destroy();
    await killProcessesOver(data);
  }
});

const bench = (): Promise<CliResult> => site.cli('--json', 'bench', 'storage', '--mib', '16', '--seconds', '1');

/** Everything of the run named by its tag: pool files, loop devices. */
async function taggedLeft(tag: string): Promise<string[]> {
  const pool = join(site.dataDir, 'pools', 'default');
  const files = (await readdir(pool).catch(() => [] as string[])).filter((f) => f.startsWith(tag));
  const loops = (
    await runProcess('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], { timeoutMs: 30_000 })
  ).stdout
    .split('\n')
    .filter((l) => l.includes(`${tag}-lun-`));
  return [...files.map((f) => `file ${f}`), ...loops.map((l) => `loop ${l.trim()}`)];
}

// What each cut leaves before recovery: after 'disks' the disks, their files and loop devices,
// after 'guest' also the bench VM (its QEMU running, unless the guest already powered off after
// printing its figures), after 'cleanup' nothing.
for (const step of ['disks', 'guest', 'cleanup']) {
  test(`storage-bench cut after '${step}': rolled back, no scratch file, loop device or QEMU left`, async () => {
    let qemuAtCut: number[] = [];
    let madeAtCut = 0;
    const { job } = await cutAtStep(site, 'storage-bench', step, bench, {
      whileDown: async () => {
        qemuAtCut = (await processesOver(site.dataDir)).map((p) => p.pid);
        const pool = join(site.dataDir, 'pools', 'default');
        madeAtCut = (await readdir(pool).catch(() => [] as string[])).filter((f) => f.startsWith('bench-')).length;
      },
    });
    const tag = (job.context as { tag?: string } | null)?.tag;
    assert.match(tag ?? '', /^bench-/, 'the run wrote its tag before it made anything');
    if (step === 'cleanup') {
      assert.equal(madeAtCut, 0, 'the cleanup step had removed the files before the cut');
      assert.deepEqual(qemuAtCut, [], 'and the bench VM');
      assertRolledBack(job, /nothing of it was left/);
    } else {
      // Four disks' files (qcow2, raw, two RDMs' raw files) were there when the server died.
      assert.ok(madeAtCut >= 4, `the cut came after the disks were made (${madeAtCut} files)`);
      // The guest powers off once it printed its figures: its QEMU may or may not run at the cut.
      assert.ok(qemuAtCut.length <= 1, `at most the bench guest's QEMU ran at the cut: ${qemuAtCut.join(', ')}`);
      assertRolledBack(job, new RegExp(`storage benchmark; its .*4 disks.* \\(${tag}\\) were removed, run it again`));
      // The bench VM is named after the tag; it was registered only by the guest step.
      assert.equal(job.error!.message.includes(`VM ${tag}`), step === 'guest', job.error!.message);
    }
    for (const pid of qemuAtCut) assert.ok(!(await alive(pid)), `the bench QEMU ${pid} was stopped`);
    assert.deepEqual(await site.cliJson('vm', 'list'), []);
    assert.deepEqual(await site.cliJson('disk', 'list'), []);
    assert.deepEqual(await taggedLeft(tag!), []);
    assert.deepEqual(await leftovers(site), []);
    assert.deepEqual(
      (await site.cliJson<Job[]>('job', 'list')).filter((j) => j.state === 'running').map((j) => `${j.kind} ${j.id}`),
      [],
    );
  });
}

test('after every cut, the next storage benchmark succeeds and leaves nothing behind', async () => {
  const r = await bench();
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 2000));
  const result = JSON.parse(r.stdout) as StorageBenchResult;
  for (const kind of ['qcow2', 'raw', 'rdm-virtual', 'rdm-physical'] as const)
    assert.ok(result.kinds[kind].seq_read_mbps > 0, `${kind}: ${JSON.stringify(result.kinds[kind])}`);
  assert.deepEqual(await site.cliJson('vm', 'list'), []);
  assert.deepEqual(await site.cliJson('disk', 'list'), []);
  assert.deepEqual(await leftovers(site), []);
});

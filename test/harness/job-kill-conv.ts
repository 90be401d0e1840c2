import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../src/core/run-process.js';
import type { CliResult, SiteProcess } from './site-process.js';
import type { Job } from '../../src/jobs/job-journal.js';
import type { DiskRecord } from '../../src/disks/disk-record.js';
import type { VmView } from '../../src/vms/vm-service.js';

/*
 * Kill -9 at a job step, for the single-site kinds (conversions, imports, exports, storage
 * benchmarks): arm the step's fault point, start the operation, wait for the server to die,
 * start it again unarmed (its recovery runs then), and look at what is left with real files
 * and the real API.
 */

/**
 * The server is restarted armed with `job:KIND:STEP`; `trigger` starts the operation through the CLI.
 * `whileDown` runs between the death and the restart (to see what the cut left before recovery).
 */
export async function cutAtStep(
  site: SiteProcess,
  kind: string,
  step: string,
  trigger: () => Promise<CliResult>,
  opts: { whileDown?: () => Promise<void> } = {},
): Promise<{ cut: CliResult; job: Job }> {
  const before = new Set((await site.cliJson<Job[]>('job', 'list')).map((j) => j.id));
  await site.stopServer();
  await site.start({ MAMORI_FAULT_POINTS: `job:${kind}:${step}` });
  const running = trigger();
  // Whichever comes first: the server dies, or the CLI ends because the operation ended without
  // passing the point (then the server is still up and the test fails at once, not after a timeout).
  await Promise.race([running, site.serverExited(600_000)]);
  assert.ok(await site.serverExited(15_000), `the fault point job:${kind}:${step} killed the server`);
  const cut = await running;
  assert.notEqual(cut.code, 0, `the CLI saw the server go: ${cut.stdout}${cut.stderr}`);
  await opts.whileDown?.();
  // Unarmed: the interrupted job's recovery rule runs before the server listens.
  await site.start();
  const job = (await site.cliJson<Job[]>('job', 'list')).find((j) => j.kind === kind && !before.has(j.id));
  assert.ok(job, `a ${kind} job was made`);
  const stepState = job.steps.find((s) => s.name === step)?.state;
  assert.equal(stepState, 'running', `the cut came after ${step}'s work and before the journal said done`);
  return { cut, job };
}

/** A job recovered by rollback: failed (never left running), with a message saying what was undone. */
export function assertRolledBack(job: Job, undone: RegExp): void {
  assert.equal(job.state, 'failed', JSON.stringify(job));
  assert.match(job.error?.message ?? '', undone);
}

/**
 * What the site keeps on disk, checked against its rows: every file in the pool belongs to a
 * disk (or an overlay of one), every VM folder to a VM, no conversion scratch folder stays,
 * and every QEMU or qemu-img running over the site's folder is a VM the site lists with that pid.
 * Returns the problems found (empty: clean).
 */
export async function leftovers(site: SiteProcess): Promise<string[]> {
  const problems: string[] = [];
  // The API's disk leaves out overlays (the record has them): none of these kinds makes snapshots.
  const disks = await site.cliJson<(Pick<DiskRecord, 'path'> & { overlays?: string[] })[]>('disk', 'list');
  const vms = await site.cliJson<VmView[]>('vm', 'list');
  const owned = new Set(disks.flatMap((d) => [d.path, ...(d.overlays ?? [])]));
  const pool = join(site.dataDir, 'pools', 'default');
  for (const f of await readdir(pool).catch(() => [] as string[]))
    if (!owned.has(join(pool, f))) problems.push(`orphan file in the pool: ${f}`);
  const vmIds = new Set(vms.map((v) => v.id));
  for (const d of await readdir(join(site.dataDir, 'vms')).catch(() => [] as string[]))
    if (!vmIds.has(d)) problems.push(`folder of no VM: vms/${d}`);
  for (const d of await readdir(join(site.dataDir, 'conversions')).catch(() => [] as string[]))
    problems.push(`conversion scratch folder left: conversions/${d}`);
  for (const f of await readdir(join(site.dataDir, 'exports')).catch(() => [] as string[]))
    if (f.startsWith('.')) problems.push(`export scratch left: exports/${f}`);
  const vmPids = new Set(vms.map((v) => v.pid).filter((p): p is number => typeof p === 'number'));
  for (const pid of await processesOver(site.dataDir)) {
    if (!vmPids.has(pid.pid)) problems.push(`process ${pid.pid} (${pid.cmd}) over the site's folder is no listed VM`);
  }
  const loops = (
    await runProcess('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], { timeoutMs: 30_000 })
  ).stdout;
  for (const l of loops.split('\n').filter((x) => x.includes(site.dataDir))) problems.push(`loop device left: ${l}`);
  return problems;
}

/** Processes (QEMU, qemu-img, storage daemons) whose command line names the folder. */
export async function processesOver(dir: string): Promise<{ pid: number; cmd: string }[]> {
  const out: { pid: number; cmd: string }[] = [];
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const argv0 = cmd.split('\0')[0] ?? '';
    if (/qemu/.test(argv0) && cmd.includes(dir)) out.push({ pid: Number(p), cmd: argv0 });
  }
  return out;
}

/** Kills what a cut left running over the folder (a test's own cleanup, after its assertions). */
export async function killProcessesOver(dir: string): Promise<void> {
  for (const { pid } of await processesOver(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

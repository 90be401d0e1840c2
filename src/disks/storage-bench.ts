import { readFile, rm, truncate, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmService } from '../vms/vm-service.js';
import type { DiskService } from './disk-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { defineJobKind } from '../jobs/job-kind.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import { runProcess } from '../core/run-process.js';
import { MamoriError } from '../core/mamori-error.js';
import { newShortId } from '../core/ids.js';

/** The run's tag, written before anything is made: the scratch VM, disks and files are named after it. */
interface StorageBenchContext {
  tag: string;
}

export const STORAGE_BENCH_JOB = defineJobKind<StorageBenchContext>({
  kind: 'storage-bench',
  policy: 'rollback',
  steps: ['disks', 'guest', 'cleanup'],
  summary: "The site's storage measured with fio in a scratch guest: disks, guest, cleanup",
  context: {
    version: 1,
    schema: {
      type: 'object',
      required: ['tag'],
      properties: { tag: { type: 'string', pattern: '^bench-[A-Za-z0-9_-]+$' } },
    },
  },
});
export const BENCH_KINDS = ['qcow2', 'raw', 'rdm-virtual', 'rdm-physical'] as const;
export type BenchKind = (typeof BENCH_KINDS)[number];

export interface DiskBenchFigures {
  seq_read_mbps: number;
  seq_write_mbps: number;
  rand_read_iops: number;
  rand_write_iops: number;
}
export interface StorageBenchResult {
  mib: number;
  seconds: number;
  pool: string;
  kinds: Record<BenchKind, DiskBenchFigures>;
  /** RDM over qcow2 for each figure: the question the table answers. */
  ratios: Record<string, number>;
}

/**
 * `mamori bench storage`: the same test guest measures four disks on the same storage pool in
 * one run, each attached as mamori attaches that kind: a qcow2 image, a raw image, and a
 * loop device over a raw file of that pool as a raw device mapping in virtual mode (host page
 * cache) and in physical mode (O_DIRECT). The guest runs its own benchmark (src/guest/diskbench.c:
 * O_DIRECT sequential 1 MiB and random 4 KiB at queue depth 1) and prints one line per disk.
 * Everything it made (disks, loop devices, the VM) goes at the end, also when a step fails.
 */
export class StorageBench {
  #vms: VmService;
  #disks: DiskService;
  #jobs: JobJournal;
  #paths: SitePaths;
  #log: Logger;

  constructor(deps: { vms: VmService; disks: DiskService; jobs: JobJournal; paths: SitePaths; log: Logger }) {
    this.#vms = deps.vms;
    this.#disks = deps.disks;
    this.#jobs = deps.jobs;
    this.#paths = deps.paths;
    this.#log = deps.log;
    this.#jobs.define(STORAGE_BENCH_JOB, (job, ctx) => this.#recover(job, ctx));
  }

  async start(opts: { mib?: number; seconds?: number } = {}): Promise<Job> {
    const mib = opts.mib ?? 256;
    const seconds = opts.seconds ?? 5;
    if (!Number.isInteger(mib) || mib < 16 || mib > 16384)
      throw new MamoriError('OUT_OF_RANGE', `mib must be a whole number from 16 to 16384, not ${mib}`);
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 600)
      throw new MamoriError('OUT_OF_RANGE', `seconds must be a whole number from 1 to 600, not ${seconds}`);
    const pool = 'default';
    const job = await this.#jobs.create(STORAGE_BENCH_JOB, pool);
    void this.#run(job.id, mib, seconds, pool).then(
      (r) => this.#jobs.succeed(job.id, r),
      (e: unknown) =>
        this.#jobs.fail(job.id, {
          code: e instanceof MamoriError ? e.code : 'INTERNAL',
          message: (e as Error).message,
        }),
    );
    return job;
  }

  async #run(jobId: string, mib: number, seconds: number, pool: string): Promise<StorageBenchResult> {
    const tag = `bench-${newShortId('b').slice(-6)}`;
    const sizeBytes = (mib + 16) * 1024 * 1024;
    const made: { disks: string[]; loops: string[]; files: string[]; vm: string | null } = {
      disks: [],
      loops: [],
      files: [],
      vm: null,
    };
    // Before anything is made: all a crash's recovery needs to find what this run made.
    await this.#jobs.setContext(STORAGE_BENCH_JOB, jobId, { tag });
    try {
      await this.#jobs.step(jobId, 'disks', async () => {
        for (const format of ['qcow2', 'raw'] as const) {
          await this.#disks.create({ name: `${tag}-${format}`, sizeBytes, format });
          made.disks.push(`${tag}-${format}`);
        }
        for (const mode of ['virtual', 'physical'] as const) {
          // A loop device over a raw file in the same pool: the same storage under every kind.
          const file = join(this.#disks.poolDir(), `${tag}-lun-${mode}.raw`);
          await (await open(file, 'wx')).close();
          made.files.push(file);
          await truncate(file, sizeBytes);
          const loop = (await runProcess('losetup', ['--find', '--show', file], { timeoutMs: 30_000 })).stdout.trim();
          made.loops.push(loop);
          await this.#disks.createRdm({ name: `${tag}-rdm-${mode}`, device: loop, mode });
          made.disks.push(`${tag}-rdm-${mode}`);
        }
      });
      const serial = await this.#jobs.step(jobId, 'guest', async () => {
        const vm = await this.#vms.create({
          name: tag,
          testGuest: true,
          memoryMiB: 256,
          disks: made.disks,
          writelog: false,
          nics: [{ network: 'none' }],
          diskbench: { mib, seconds },
        });
        made.vm = tag;
        await this.#vms.start(tag);
        const log = this.#paths.vmRuntime(vm.id).serialLog;
        // Four disks, two timed phases and two sized ones each; TCG is slow: a generous bound.
        const deadline = Date.now() + 120_000 + BENCH_KINDS.length * (seconds * 2 * 1000 + mib * 400);
        for (;;) {
          const text = await readFile(log, 'utf8').catch(() => '');
          if (/mamori-guest diskbench done/.test(text)) return text;
          const state = (await this.#vms.repo.findByName(tag))?.state;
          if (state === 'crashed' || (state === 'stopped' && !/diskbench done/.test(text)))
            throw new MamoriError(
              'PROCESS_FAILED',
              `the benchmark guest stopped before it finished: ${text
                .split('\n')
                .filter((l) => l.includes('mamori-guest'))
                .slice(-3)
                .join(' / ')}`,
            );
          if (Date.now() > deadline)
            throw new MamoriError('PROCESS_TIMEOUT', 'the benchmark guest did not finish in time');
          await this.#jobs.progress(
            jobId,
            Math.min(0.95, (text.match(/mamori-guest diskbench dev=/g)?.length ?? 0) / BENCH_KINDS.length),
          );
          await new Promise((r) => setTimeout(r, 1000));
        }
      });
      const kinds = parseDiskbench(serial, made.disks, tag);
      const ratios: Record<string, number> = {};
      for (const k of ['rdm-virtual', 'rdm-physical'] as const) {
        for (const f of ['seq_read_mbps', 'seq_write_mbps', 'rand_read_iops', 'rand_write_iops'] as const) {
          ratios[`${k.replace('-', '_')}_vs_qcow2_${f}`] = Number((kinds[k][f] / kinds.qcow2[f]).toFixed(3));
        }
      }
      return { mib, seconds, pool, kinds, ratios };
    } finally {
      await this.#jobs
        .step(jobId, 'cleanup', () => this.#cleanup(made))
        .catch((e: unknown) => this.#log.warn({ err: e }, 'storage bench cleanup failed'));
    }
  }

  /**
   * Policy rollback, as the 'cleanup' step would have done it: a crash leaves the bench VM
   * (re-attached and running, or not), its disks, loop devices and their files, all named after
   * the run's tag. Loop devices are found by their backing file, since their names died with
   * the process.
   */
  async #recover(_job: Job, ctx: StorageBenchContext | null): Promise<string> {
    const tag = ctx?.tag;
    if (!tag) return 'the site server stopped before the storage benchmark made anything; run it again';
    const made: { disks: string[]; loops: string[]; files: string[]; vm: string | null } = {
      vm: (await this.#vms.repo.findByName(tag)) ? tag : null,
      disks: [],
      loops: [],
      files: [],
    };
    for (const suffix of ['qcow2', 'raw', 'rdm-virtual', 'rdm-physical'])
      if (await this.#disks.repo.findByName(`${tag}-${suffix}`)) made.disks.push(`${tag}-${suffix}`);
    for (const mode of ['virtual', 'physical']) {
      const file = join(this.#disks.poolDir(), `${tag}-lun-${mode}.raw`);
      made.files.push(file);
      const out = await runProcess('losetup', ['--associated', file, '--noheadings', '--output', 'NAME'], {
        timeoutMs: 30_000,
      }).catch(() => ({ stdout: '' }));
      made.loops.push(
        ...out.stdout
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l.startsWith('/dev/')),
      );
    }
    const files: string[] = [];
    for (const f of made.files) if (await stat(f).catch(() => null)) files.push(f);
    await this.#cleanup(made);
    // Say what was found: a cut after the cleanup step leaves nothing, and "removed" would mislead.
    const found = [
      ...(made.vm ? [`VM ${made.vm}`] : []),
      ...(made.disks.length > 0 ? [`${made.disks.length} disks`] : []),
      ...(made.loops.length > 0 ? [`${made.loops.length} loop devices`] : []),
      ...(files.length > 0 ? [`${files.length} scratch files`] : []),
    ];
    return found.length === 0
      ? `the site server stopped during a storage benchmark (${tag}) after its cleanup; nothing of it was left, run it again`
      : `the site server stopped during a storage benchmark; its ${found.join(', ')} (${tag}) were removed, run it again`;
  }

  async #cleanup(made: { disks: string[]; loops: string[]; files: string[]; vm: string | null }): Promise<void> {
    if (made.vm)
      await this.#vms
        .delete(made.vm, { force: true })
        .catch((e: unknown) => this.#log.warn({ err: e }, 'bench VM not deleted'));
    for (const d of made.disks)
      await this.#disks.delete(d).catch((e: unknown) => this.#log.warn({ err: e, disk: d }, 'bench disk not deleted'));
    for (const l of made.loops)
      await runProcess('losetup', ['-d', l], { timeoutMs: 30_000 }).catch((e: unknown) =>
        this.#log.warn({ err: e, loop: l }, 'loop device not detached'),
      );
    for (const f of made.files) await rm(f, { force: true });
  }
}

/** The guest's lines, in attachment order: qcow2, raw, rdm-virtual, rdm-physical. */
export function parseDiskbench(serial: string, diskNames: string[], tag: string): Record<BenchKind, DiskBenchFigures> {
  const lines = [...serial.matchAll(/^mamori-guest diskbench dev=(\S+)(.*)$/gm)].filter((m) => !m[0].includes(' done'));
  const errors = lines.filter((m) => / error=/.test(m[2]!));
  if (errors.length > 0)
    throw new MamoriError('PROCESS_FAILED', `the guest benchmark failed: ${errors.map((m) => m[0]).join(' / ')}`);
  if (lines.length !== diskNames.length)
    throw new MamoriError('PROCESS_FAILED', `the guest reported ${lines.length} disks of ${diskNames.length}`);
  const out: Partial<Record<BenchKind, DiskBenchFigures>> = {};
  lines.forEach((m, i) => {
    const f = Object.fromEntries([...m[2]!.matchAll(/(\w+)=([\d.]+)/g)].map((x) => [x[1]!, Number(x[2])]));
    const kind = diskNames[i]!.slice(tag.length + 1) as BenchKind;
    out[kind] = {
      seq_read_mbps: f['seq_read_mbps']!,
      seq_write_mbps: f['seq_write_mbps']!,
      rand_read_iops: f['rand_read_iops']!,
      rand_write_iops: f['rand_write_iops']!,
    };
  });
  return out as Record<BenchKind, DiskBenchFigures>;
}

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { defineJobKind } from '../jobs/job-kind.js';
import type { InspectionReport } from '../inspect/inspector.js';
import { isMamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import type { ConvergeResult, ConvergePass } from './p2v-converge.js';
import { compatibilityWarnings, guestHasVirtioBlk, guestHasVirtioNet } from './compatibility.js';
import type { ConvertInput } from './conversion-input.js';

/**
 * What a conversion keeps in its job context: the source as shown (a URI without secrets), the
 * inspection, and the disks it makes (or, for P2V, the one disk and its passes), which a
 * recovery removes if the VM was never registered.
 */
export interface ConvertJobContext {
  source: string;
  inspection?: unknown;
  disks?: string[];
  descriptor?: unknown;
  device?: string;
  p2v?: P2vContext;
}

export const CONVERT_JOB = defineJobKind<ConvertJobContext>({
  kind: 'vm-convert',
  policy: 'rollback',
  steps: null,
  summary: 'A disk image, NBD export, OVF/OVA or running machine (P2V) made into a VM: copy, register, start',
  context: {
    version: 1,
    schema: {
      type: 'object',
      required: ['source'],
      properties: {
        source: { type: 'string' },
        disks: { type: 'array', items: { type: 'string' } },
        device: { type: 'string' },
        p2v: {
          type: 'object',
          required: ['disk', 'passes'],
          properties: { disk: { type: 'string' }, passes: { type: 'array' } },
        },
      },
    },
  },
});

/** What a conversion job succeeds with. */
export interface ConvertResult {
  vm: string;
  /** The boot disk (the first of `disks`). */
  disk: string;
  disks: string[];
  vcpus: number;
  memoryMiB: number;
  /** What an OVF/OVA descriptor said of the hardware, when the source is one. */
  descriptor?: { vcpus: number; memoryMiB: number; firmware: 'uefi' | 'bios'; warnings: string[] };
  firmware: 'uefi' | 'bios';
  nicModel: 'virtio-net-pci' | 'e1000';
  diskBus: 'virtio' | 'sata';
  os: InspectionReport['os'];
  /** What degrades the result (the compatibility report); blockers refuse the conversion instead. */
  warnings: string[];
  started: boolean;
  /** P2V only: the passes, and how consistent the copy is. */
  p2v?: Omit<ConvergeResult, 'passes'> & { passes: ConvergePass[] };
}

/** What a conversion turns into: disks, firmware and size of the VM, and how its disks are copied. */
export interface ConvertPlan {
  diskNames: string[];
  firmware: 'uefi' | 'bios';
  memoryMiB: number | undefined;
  vcpus: number | undefined;
  descriptor?: ConvertResult['descriptor'];
  copy: () => Promise<ConvergeResult | undefined>;
}

/** What a P2V conversion keeps in its job context, for progress and for recovery after a crash. */
export interface P2vContext {
  disk: string;
  passes: ConvergePass[];
}

function convertSteps(start: boolean): string[] {
  return ['copy', 'register', ...(start ? ['start'] : [])];
}

/**
 * The conversion job, whatever kind of source feeds it: made once the source is checked, it
 * copies (the plan's own way), registers the VM and maybe starts it. A failure at any step
 * removes what the earlier ones made, and a crash is recovered the same way: no half-created
 * VM or disk is left.
 */
export class ConversionJobs {
  #disks: DiskService;
  #vms: VmService;
  #jobs: JobJournal;
  #log: Logger;
  #runDir: string;

  /** `runDir`: where conversions keep scratch state (the P2V target's storage daemon), one folder per job. */
  constructor(deps: { disks: DiskService; vms: VmService; jobs: JobJournal; log: Logger; runDir: string }) {
    this.#disks = deps.disks;
    this.#vms = deps.vms;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    this.#runDir = deps.runDir;
    this.#jobs.define(CONVERT_JOB, (job, ctx) => this.#recover(job, ctx));
  }

  /** The job of a conversion whose disks its copy makes (nothing exists yet to clean up). */
  create(vmName: string, start: boolean): Promise<Job> {
    return this.#jobs.create(CONVERT_JOB, vmName, { steps: convertSteps(start) });
  }

  /** The conversion's job; if it cannot be made, the disk made for it goes too (nothing half-created is left). */
  async createOwning(diskName: string, vmName: string, start: boolean): Promise<Job> {
    try {
      return await this.#jobs.create(CONVERT_JOB, vmName, { steps: convertSteps(start) });
    } catch (e) {
      await this.#disks.delete(diskName).catch(() => undefined);
      throw e;
    }
  }

  /** The job's scratch folder (a storage daemon's sockets and pid file). */
  runDir(jobId: string): string {
    return join(this.#runDir, jobId);
  }

  /** Runs the job in the background: the caller answers with the job at once, the job records the outcome. */
  launch(jobId: string, input: ConvertInput, report: InspectionReport, plan: ConvertPlan): void {
    void this.#run(jobId, input, report, plan).catch((e: unknown) =>
      this.#log.error({ job: jobId, err: e }, 'conversion failed outside its steps'),
    );
  }

  /** Records what the conversion makes, for its recovery. */
  setContext(jobId: string, ctx: ConvertJobContext): Promise<void> {
    return this.#jobs.setContext(CONVERT_JOB, jobId, ctx);
  }

  /**
   * Policy rollback: a conversion the crash cut did not succeed, so nothing it made stays. It
   * may have registered (even started) its VM before the journal said so: that VM goes too,
   * found by its name and known as ours by holding the job's disks (a VM of that name that
   * holds none of them is someone else's and stays). Left in place, it would make the job's
   * "run it again" fail on the taken name. A P2V's storage daemon is stopped.
   */
  async #recover(job: Job, ctx: ConvertJobContext | null): Promise<string> {
    const runDir = this.runDir(job.id);
    await StorageDaemon.killLeftover({
      qmpSocket: join(runDir, 'qmp.sock'),
      pidFile: join(runDir, 'qemu-storage-daemon.pid'),
    }).catch(() => undefined);
    // A copy cut mid-way (NBD or P2V) leaves its scratch folder: the daemon's NBD socket, which
    // killLeftover does not know. Nothing in it is worth keeping once the daemon is gone.
    await rm(runDir, { recursive: true, force: true });
    const disks = ctx?.p2v ? [ctx.p2v.disk] : (ctx?.disks ?? []);
    const diskIds: string[] = [];
    for (const d of disks) {
      const row = await this.#disks.repo.findByName(d);
      if (row) diskIds.push(row.id);
    }
    const vm = job.target ? await this.#vms.repo.findByName(job.target) : undefined;
    const ours = vm !== undefined && vm.definition.diskIds.some((id) => diskIds.includes(id));
    if (ours) await this.#vms.delete(vm.name, { force: true });
    for (const d of disks) await this.#disks.delete(d).catch(() => undefined);
    return ours
      ? `the site server stopped during the conversion; the VM ${vm.name} it had registered and its copied disks were removed, run it again`
      : 'the site server stopped during the conversion; the partial copy was removed, run it again';
  }

  async #run(jobId: string, input: ConvertInput, report: InspectionReport, plan: ConvertPlan): Promise<void> {
    let vmMade = false;
    let pulled: ConvergeResult | undefined;
    try {
      await this.#jobs.step(jobId, 'copy', async () => void (pulled = await plan.copy()));
      const nicModel: ConvertResult['nicModel'] = guestHasVirtioNet(report) ? 'virtio-net-pci' : 'e1000';
      const diskBus: ConvertResult['diskBus'] = guestHasVirtioBlk(report) ? 'virtio' : 'sata';
      await this.#jobs.step(jobId, 'register', async () => {
        await this.#vms.create({
          name: input.name,
          firmware: plan.firmware,
          disks: plan.diskNames,
          nics: [{ model: nicModel }],
          diskBus,
          ...(input.machineType !== undefined ? { machineType: input.machineType } : {}),
          ...(plan.memoryMiB !== undefined ? { memoryMiB: plan.memoryMiB } : {}),
          ...(plan.vcpus !== undefined ? { vcpus: plan.vcpus } : {}),
        });
        vmMade = true;
      });
      if (input.start) await this.#jobs.step(jobId, 'start', () => this.#vms.start(input.name));
      const vm = await this.#vms.get(input.name);
      const result: ConvertResult = {
        vm: input.name,
        disk: plan.diskNames[0]!,
        disks: plan.diskNames,
        firmware: plan.firmware,
        nicModel,
        diskBus,
        os: report.os,
        started: input.start === true,
        vcpus: vm.definition.vcpus,
        memoryMiB: vm.definition.memoryMiB,
        warnings: [
          ...compatibilityWarnings(report),
          ...(plan.descriptor?.warnings ?? []),
          ...(pulled !== undefined && pulled.consistency !== 'frozen' ? [pulled.note] : []),
        ],
        ...(plan.descriptor ? { descriptor: plan.descriptor } : {}),
        ...(pulled !== undefined ? { p2v: pulled } : {}),
      };
      await this.#jobs.succeed(jobId, result);
    } catch (e) {
      // Nothing half-made stays: the VM (if registered) and the copied disks go.
      if (vmMade) await this.#vms.delete(input.name, { force: true }).catch(() => undefined);
      for (const d of plan.diskNames) await this.#disks.delete(d).catch(() => undefined);
      await this.#jobs.fail(jobId, { code: isMamoriError(e) ? e.code : 'INTERNAL', message: (e as Error).message });
    }
  }
}

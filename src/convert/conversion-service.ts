import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { openSource } from '../inspect/image-source.js';
import { inspectDisk, type InspectionReport } from '../inspect/inspector.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import type { Logger } from '../core/logger.js';
import type { ImageFormat } from '../disks/disk-record.js';

export const CONVERT_JOB = 'vm-convert';

export interface ConvertInput {
  /** Absolute path on the site's host: a block device or an image QEMU reads. */
  source: string;
  name: string;
  format?: ImageFormat;
  start?: boolean;
  memoryMiB?: number;
  vcpus?: number;
}

export interface ConvertResult {
  vm: string;
  disk: string;
  firmware: 'uefi' | 'bios';
  nicModel: 'virtio-net-pci' | 'e1000';
  diskBus: 'virtio' | 'sata';
  os: InspectionReport['os'];
  /** What degrades the result (the compatibility report); blockers refuse the conversion instead. */
  warnings: string[];
  started: boolean;
}

/**
 * Converts a physical disk or a VMware/Hyper-V image into a VM of this site (vCenter
 * Converter's job, virt-v2v's rules): inspect first (firmware, guest OS, drivers), copy the
 * disk into the pool through qemu-img (sparse, with progress), then register a VM that
 * follows the inspection: OVMF for UEFI sources, SeaBIOS otherwise, a pinned machine type,
 * virtio NIC where the guest has the drivers, e1000 otherwise. A failure at any step
 * removes what the earlier ones made: no half-created VM or disk is left.
 */
export class ConversionService {
  #disks: DiskService;
  #vms: VmService;
  #jobs: JobJournal;
  #log: Logger;

  constructor(deps: { disks: DiskService; vms: VmService; jobs: JobJournal; log: Logger }) {
    this.#disks = deps.disks;
    this.#vms = deps.vms;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
  }

  /** Checks and inspects now (bad input and blockers are answered at once), converts as a job. */
  async start(input: ConvertInput): Promise<Job> {
    assertValidName('VM', input.name);
    if (typeof input.source !== 'string' || !input.source.startsWith('/')) throw new MamoriError('INVALID_INPUT', 'source must be an absolute path on the site server host (a block device or an image)');
    if (await this.#vms.repo.findByName(input.name)) throw new MamoriError('VM_EXISTS', `a VM named ${input.name} already exists; choose another --name`);
    const report = await inspectSource(input.source);
    const blockers = conversionBlockers(report);
    if (blockers.length > 0) throw new MamoriError('INVALID_INPUT', `${input.source} cannot be converted: ${blockers.join('; ')}`, { details: { blockers } });
    const diskName = `${input.name}-disk0`;
    const importJob = await this.#disks.startImport({ name: diskName, source: input.source, ...(input.format ? { targetFormat: input.format } : {}) }, { checked: true });
    const job = await this.#jobs.create(CONVERT_JOB, input.name, ['copy', 'register', ...(input.start ? ['start'] : [])]);
    await this.#jobs.setContext(job.id, { source: input.source, inspection: report, importJob: importJob.id });
    void this.#run(job.id, input, report, diskName, importJob.id).catch((e: unknown) => this.#log.error({ job: job.id, err: e }, 'conversion failed outside its steps'));
    return job;
  }

  async #run(jobId: string, input: ConvertInput, report: InspectionReport, diskName: string, importJobId: string): Promise<void> {
    let vmMade = false;
    try {
      await this.#jobs.step(jobId, 'copy', () => this.#followImport(jobId, importJobId));
      const nicModel: ConvertResult['nicModel'] = guestHasVirtioNet(report) ? 'virtio-net-pci' : 'e1000';
      const diskBus: ConvertResult['diskBus'] = guestHasVirtioBlk(report) ? 'virtio' : 'sata';
      await this.#jobs.step(jobId, 'register', async () => {
        await this.#vms.create({
          name: input.name, firmware: report.firmware, disks: [diskName], nics: [{ model: nicModel }], diskBus,
          ...(input.memoryMiB !== undefined ? { memoryMiB: input.memoryMiB } : {}), ...(input.vcpus !== undefined ? { vcpus: input.vcpus } : {}),
        });
        vmMade = true;
      });
      if (input.start) await this.#jobs.step(jobId, 'start', () => this.#vms.start(input.name));
      const result: ConvertResult = {
        vm: input.name, disk: diskName, firmware: report.firmware, nicModel, diskBus, os: report.os, warnings: compatibilityWarnings(report), started: input.start === true,
      };
      await this.#jobs.succeed(jobId, result);
    } catch (e) {
      // Nothing half-made stays: the VM (if registered) and the copied disk go.
      if (vmMade) await this.#vms.delete(input.name, { force: true }).catch(() => undefined);
      await this.#disks.delete(diskName).catch(() => undefined);
      await this.#jobs.fail(jobId, { code: isMamoriError(e) ? e.code : 'INTERNAL', message: (e as Error).message });
    }
  }

  /** Waits for the copy (no polling delay at its end), mirroring its progress meanwhile. */
  async #followImport(jobId: string, importJobId: string): Promise<void> {
    let ended = false;
    const ending = this.#disks.importEnded(importJobId).finally(() => void (ended = true));
    while (!ended) {
      await this.#jobs.progress(jobId, (await this.#jobs.get(importJobId)).progress * 0.95);
      await Promise.race([ending, new Promise((r) => setTimeout(r, 250))]);
    }
    const j = await this.#jobs.get(importJobId);
    if (j.state !== 'succeeded') throw new MamoriError('PROCESS_FAILED', `copying the disk failed: ${j.error?.message ?? 'unknown error'}`);
  }
}

export async function inspectSource(path: string): Promise<InspectionReport> {
  const source = await openSource(path);
  try {
    return await inspectDisk(source.reader);
  } finally {
    await source.close();
  }
}

/** What makes a conversion pointless or harmful: refused with the reason. */
export function conversionBlockers(r: InspectionReport): string[] {
  const out: string[] = [];
  if (r.partitions.length === 0 && r.partitionTable === 'none') out.push('it holds no partition table and no filesystem (an empty or unknown disk)');
  if (r.partitions.some((p) => p.typeId === '0x42' || p.type.startsWith('Windows LDM'))) out.push('it is a Windows dynamic disk (LDM): convert its volumes to basic disks in Windows first');
  return out;
}

/** What converts but degrades the result: the compatibility report. */
export function compatibilityWarnings(r: InspectionReport): string[] {
  const out = [...r.warnings];
  if (r.os.type === 'unknown') out.push('no guest operating system was found (encrypted, or not one the inspector reads): the VM gets virtio disks and an e1000 NIC');
  if (r.os.type === 'windows' && !guestHasVirtioBlk(r)) out.push('this Windows guest has no virtio storage driver (viostor): its disk is attached as SATA, which is slower; install virtio-win and switch the VM to virtio (vm create --disk-bus virtio) afterwards');
  return out;
}

/** virtio-blk needs Linux 2.6.25 or later (or no OS we can tell), or viostor in Windows. */
function guestHasVirtioBlk(r: InspectionReport): boolean {
  if (r.os.type === 'windows') return (r.os.virtioDrivers ?? []).includes('viostor');
  return true;
}

/** virtio-net needs Linux 2.6.25 or later, or netkvm in Windows. */
function guestHasVirtioNet(r: InspectionReport): boolean {
  if (r.os.type === 'linux') return true;
  if (r.os.type === 'windows') return (r.os.virtioDrivers ?? []).includes('netkvm');
  return false;
}

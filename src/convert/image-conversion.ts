import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { openSource } from '../inspect/image-source.js';
import { inspectDisk, type InspectionReport } from '../inspect/inspector.js';
import { MamoriError } from '../core/mamori-error.js';
import { checkUntrustedImage, untrustedImageInfo } from '../qemu/qemu-img-read.js';
import { vetUntrustedImage } from '../images/untrusted-image.js';
import { readOvfSource } from './ovf-source.js';
import { conversionBlockers, guestHasVirtioBlk } from './compatibility.js';
import type { ConvertInput } from './conversion-input.js';
import type { ConversionJobs, ConvertPlan } from './conversion-job.js';

/** Disks a converted VM may have (virtio-blk slots we hand out; SATA takes 6). */
const MAX_DISKS = 16;

/** What the check of a host path found: the source as judged, its boot disk's inspection, and what else it says. */
export interface ImageCheck {
  /** The canonical path. */
  source: string;
  report: InspectionReport;
  disks: number;
  blockers: string[];
  warnings: string[];
}

/**
 * A source on the site's host (a block device, a disk image, an OVF or OVA with its disks):
 * every disk inspected or vetted before anything is made, then each imported into the pool
 * as a disk import job this conversion follows.
 */
export class ImageConversion {
  #disks: DiskService;
  #vms: VmService;
  #jobs: JobJournal;
  #conversions: ConversionJobs;

  constructor(deps: { disks: DiskService; vms: VmService; jobs: JobJournal; conversions: ConversionJobs }) {
    this.#disks = deps.disks;
    this.#vms = deps.vms;
    this.#jobs = deps.jobs;
    this.#conversions = deps.conversions;
  }

  /** The compatibility report's part that only a host path has: its disks and its descriptor's warnings. */
  async check(input: { source: string }): Promise<ImageCheck> {
    if (typeof input.source !== 'string' || !input.source.startsWith('/'))
      throw new MamoriError(
        'INVALID_INPUT',
        'source must be an absolute path on the site server host (a block device or an image), or an NBD URI (nbd://HOST[:PORT][/EXPORT], nbd+unix:///EXPORT?socket=PATH)',
      );
    const blockers: string[] = [];
    const warnings: string[] = [];
    const source = (await this.#disks.hostPaths.image(input.source)).path;
    const ovf = await readOvfSource(source);
    const sources: { file: string; member?: { offset: number; size: number } }[] = ovf ? ovf.disks : [{ file: source }];
    const report = await inspectSource(sources[0]!.file, sources[0]!.member);
    if (ovf?.system.warnings) warnings.push(...ovf.system.warnings);
    if (sources.length > MAX_DISKS) blockers.push(`it has ${sources.length} disks; a VM takes at most ${MAX_DISKS}`);
    else if (!guestHasVirtioBlk(report) && sources.length > 6)
      blockers.push(
        `this guest needs SATA disks (no virtio driver) and SATA takes at most 6; it has ${sources.length}`,
      );
    return { source, report, disks: sources.length, blockers, warnings };
  }

  async start(input: ConvertInput): Promise<Job> {
    if (input.tls !== undefined)
      throw new MamoriError('INVALID_INPUT', 'tls is for nbds:// and nbds+unix:// sources only');
    if (typeof input.source !== 'string' || !input.source.startsWith('/'))
      throw new MamoriError(
        'INVALID_INPUT',
        'source must be an absolute path on the site server host (a block device or an image), or a P2V agent as nbd://HOST:PORT',
      );
    if (await this.#vms.repo.findByName(input.name))
      throw new MamoriError('VM_EXISTS', `a VM named ${input.name} already exists; choose another --name`);
    // Judged and used by its canonical path (the site's allow-list; never its data folder).
    input = { ...input, source: (await this.#disks.hostPaths.image(input.source)).path };
    // An OVA or OVF brings its own hardware (vCPUs, memory, firmware) and possibly several disks.
    const ovf = await readOvfSource(input.source);
    const sources: { file: string; member?: { offset: number; size: number } }[] = ovf
      ? ovf.disks
      : [{ file: input.source }];
    if (sources.length > MAX_DISKS)
      throw new MamoriError(
        'OUT_OF_RANGE',
        `${input.source} has ${sources.length} disks; a VM takes at most ${MAX_DISKS}`,
      );
    // The first disk is the one the VM boots from: inspection decides firmware and drivers by it.
    const report = await inspectSource(sources[0]!.file, sources[0]!.member);
    const blockers = conversionBlockers(report);
    if (blockers.length > 0)
      throw new MamoriError('INVALID_INPUT', `${input.source} cannot be converted: ${blockers.join('; ')}`, {
        details: { blockers },
      });
    // The other disks are checked now too, so a damaged one is refused before anything is made.
    // Refused before the copy, not after it: the bus follows from the inspection alone.
    if (!guestHasVirtioBlk(report) && sources.length > 6)
      throw new MamoriError(
        'OUT_OF_RANGE',
        `this guest needs SATA disks (no virtio driver) and SATA takes at most 6; ${input.source} has ${sources.length}`,
      );
    for (const src of sources.slice(1)) await checkSource(src.file, src.member);
    const diskNames = sources.map((_, i) => `${input.name}-disk${i}`);
    for (const d of diskNames) {
      if (await this.#disks.repo.findByName(d))
        throw new MamoriError(
          'DISK_EXISTS',
          `a disk named ${d} already exists; choose another --name or delete that disk`,
        );
    }
    const job = await this.#conversions.create(input.name, input.start === true);
    const descriptor = ovf
      ? {
          vcpus: ovf.system.vcpus,
          memoryMiB: ovf.system.memoryMiB,
          firmware: ovf.system.firmware,
          warnings: ovf.system.warnings ?? [],
        }
      : undefined;
    await this.#conversions.setContext(job.id, {
      source: input.source,
      inspection: report,
      disks: diskNames,
      ...(descriptor ? { descriptor } : {}),
    });
    const copy = async (): Promise<undefined> => {
      for (const [i, src] of sources.entries()) {
        const importJob = await this.#disks.startImport(
          {
            name: diskNames[i]!,
            source: src.file,
            ...(src.member ? { member: src.member } : {}),
            ...(input.format ? { targetFormat: input.format } : {}),
          },
          { checked: true },
        );
        await this.#followImport(job.id, importJob.id, i / sources.length, (i + 1) / sources.length);
      }
      return undefined;
    };
    const plan: ConvertPlan = {
      diskNames,
      copy,
      // The descriptor says what the VM booted with; a disk without an ESP still decides by inspection.
      firmware: descriptor?.firmware === 'uefi' ? 'uefi' : report.firmware,
      memoryMiB: input.memoryMiB ?? descriptor?.memoryMiB,
      vcpus: input.vcpus ?? descriptor?.vcpus,
      descriptor,
    };
    this.#conversions.launch(job.id, input, report, plan);
    return job;
  }

  /** Waits for the copy (no polling delay at its end), mirroring its progress meanwhile. */
  async #followImport(jobId: string, importJobId: string, from: number, to: number): Promise<void> {
    let ended = false;
    const ending = this.#disks.importEnded(importJobId).finally(() => void (ended = true));
    while (!ended) {
      await this.#jobs.progress(jobId, (from + (to - from) * (await this.#jobs.get(importJobId)).progress) * 0.95);
      await Promise.race([ending, new Promise((r) => setTimeout(r, 250))]);
    }
    const j = await this.#jobs.get(importJobId);
    if (j.state !== 'succeeded')
      throw new MamoriError('PROCESS_FAILED', `copying the disk failed: ${j.error?.message ?? 'unknown error'}`);
  }
}

/** Inspects a disk or image, or the byte range of one that holds an image (a VMDK in an OVA). */
export async function inspectSource(
  path: string,
  member?: { offset: number; size: number },
): Promise<InspectionReport> {
  const source = await openSource(path, member);
  try {
    return await inspectDisk(source.reader);
  } finally {
    await source.close();
  }
}

/** It names no other file, QEMU reads it and its container is sound (qemu-img info and check), or a clear refusal. */
async function checkSource(file: string, member?: { offset: number; size: number }): Promise<void> {
  const image = await vetUntrustedImage({ file, ...(member ? { member } : {}) });
  await untrustedImageInfo(image);
  await checkUntrustedImage(image);
}

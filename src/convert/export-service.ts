import { createReadStream } from 'node:fs';
import { access, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { syncDirectory } from '../core/durable-sync.js';
import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { defineJobKind } from '../jobs/job-kind.js';
import type { Logger } from '../core/logger.js';
import { activeLayer, type DiskRecord } from '../disks/disk-record.js';
import { replicatedDiskIds, type VmDefinition } from '../vms/vm-definition.js';
import { exportImage } from '../qemu/qemu-img-write.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { buildOvf } from './ovf-descriptor.js';
import { writeTar } from './ova-archive.js';
import { FALLBACK_GUEST_OS, vsphereGuestOs, type OvfGuestOs } from './vsphere-guest-os.js';
import { openSource } from '../inspect/image-source.js';
import { inspectDisk } from '../inspect/inspector.js';

/** The export's scratch folder (removed by a recovery) and the files it publishes. */
interface ExportJobContext {
  scratch: string;
  files: string[];
}

export const EXPORT_JOB = defineJobKind<ExportJobContext>({
  kind: 'vm-export',
  policy: 'rollback',
  steps: null,
  summary: 'A stopped VM written out as VMDK, VHDX or OVA: copy, package (OVA), publish',
  context: {
    version: 1,
    schema: {
      type: 'object',
      required: ['scratch', 'files'],
      properties: { scratch: { type: 'string' }, files: { type: 'array', items: { type: 'string' } } },
    },
  },
});
export const EXPORT_FORMATS = ['vmdk', 'vhdx', 'ova'] as const;
export type VmExportFormat = (typeof EXPORT_FORMATS)[number];

export interface ExportInput {
  vm: string;
  format: VmExportFormat;
  /** A folder on the site's host (made if absent); default DATA/exports. */
  directory?: string;
}

export interface ExportResult {
  vm: string;
  format: VmExportFormat;
  /** What was written, in attachment order (an OVA is one file). */
  files: string[];
  bytes: number;
  /** OVA only: the guest OS the descriptor names (vSphere's guest id), from inspecting the boot disk. */
  guestOs?: OvfGuestOs;
}

/**
 * `mamori export VM --format vmdk|vhdx|ova`: the way out, for people moving a VM to VMware
 * or Hyper-V (vCenter Converter's other direction). Disks go through qemu-img; an OVA is
 * the OVF descriptor (vCPUs, memory, firmware, NICs), a SHA-256 manifest and
 * streamOptimized VMDKs in a tar, as ovftool and vSphere import it. Everything is written
 * into a scratch folder beside the result and renamed into place at the end: a failed or
 * cut export leaves nothing under the final names.
 */
export class ExportService {
  #disks: DiskService;
  #vms: VmService;
  #jobs: JobJournal;
  #log: Logger;
  #defaultDir: string;

  constructor(deps: { disks: DiskService; vms: VmService; jobs: JobJournal; log: Logger; defaultDir: string }) {
    this.#disks = deps.disks;
    this.#vms = deps.vms;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    this.#defaultDir = deps.defaultDir;
    this.#jobs.define(EXPORT_JOB, async (job, ctx) => {
      if (ctx) await rm(ctx.scratch, { recursive: true, force: true });
      // Policy rollback: a cut in 'publish' may have renamed some or all files into place before
      // the journal said so. They go too (start found none of those names taken), or the job's
      // "run it again" would be refused on the names it left.
      const publishing = job.steps.some((s) => s.name === 'publish' && s.state !== 'pending');
      if (publishing) for (const f of ctx?.files ?? []) await rm(f, { force: true });
      return publishing
        ? 'the site server stopped while the export was put in place; its files were removed, run it again'
        : 'the site server stopped during the export; its partial files were removed, run it again';
    });
  }

  async start(input: ExportInput): Promise<Job> {
    if (!(EXPORT_FORMATS as readonly string[]).includes(input.format))
      throw new MamoriError('INVALID_INPUT', `--format must be one of ${EXPORT_FORMATS.join(', ')}`);
    // A folder the caller names must be an exchange folder of the site (--allow-import), by its canonical path.
    const directory =
      input.directory === undefined ? this.#defaultDir : (await this.#disks.hostPaths.exportDir(input.directory)).path;
    const vm = await this.#vms.get(input.vm);
    if (vm.state !== 'stopped') {
      throw new MamoriError(
        'VM_RUNNING',
        `VM ${vm.name} is ${vm.state}: stop it first (mamori vm stop ${vm.name}); a disk copied while the guest writes is not a consistent export`,
      );
    }
    const ids = replicatedDiskIds(vm.definition);
    const records = await this.#disks.repo.byIds(ids);
    const disks = ids.map((id) => records.find((d) => d.id === id)).filter((d): d is DiskRecord => d !== undefined);
    if (disks.length === 0) throw new MamoriError('INVALID_INPUT', `VM ${vm.name} has no disk to export`);
    const finals = finalNames(vm.name, input.format, disks.length).map((n) => join(directory, n));
    for (const f of finals) {
      if (
        await access(f).then(
          () => true,
          () => false,
        )
      )
        throw new MamoriError(
          'DISK_EXISTS',
          `${f} already exists: remove it or export into another folder (--output DIR)`,
          { details: { path: f } },
        );
    }
    await mkdir(directory, { recursive: true });
    const job = await this.#jobs.create(EXPORT_JOB, vm.name, {
      steps: ['copy', ...(input.format === 'ova' ? ['package'] : []), 'publish'],
    });
    const scratch = join(directory, `.mamori-export-${job.id}`);
    await this.#jobs.setContext(EXPORT_JOB, job.id, { scratch, files: finals });
    void this.#run(job.id, vm.definition, disks, input.format, scratch, finals).catch((e: unknown) =>
      this.#log.error({ job: job.id, err: e }, 'export failed outside its steps'),
    );
    return job;
  }

  /**
   * The guest OS of the boot disk as vSphere names it, by inspection (the VM is stopped, so
   * its disk holds still). A disk the inspector cannot read exports as Other Linux rather
   * than failing the export: vSphere lets a person change the guest type afterwards.
   */
  async #guestOs(vm: string, boot: DiskRecord): Promise<OvfGuestOs> {
    const layer = activeLayer(boot);
    try {
      // The site's own image (with its backing chain), so it is opened as trusted.
      const source = await openSource(layer.path, undefined, { trusted: true });
      try {
        return vsphereGuestOs((await inspectDisk(source.reader)).os);
      } finally {
        await source.close();
      }
    } catch (e) {
      this.#log.warn({ vm, err: e }, 'the boot disk could not be inspected; the OVA names Other Linux as its guest OS');
      return FALLBACK_GUEST_OS;
    }
  }

  async #run(
    jobId: string,
    def: VmDefinition,
    disks: DiskRecord[],
    format: VmExportFormat,
    scratch: string,
    finals: string[],
  ): Promise<void> {
    try {
      await mkdir(scratch, { recursive: true });
      const images = disks.map((_, i) => join(scratch, `${def.name}-disk${i}.${format === 'vhdx' ? 'vhdx' : 'vmdk'}`));
      await this.#jobs.step(jobId, 'copy', async () => {
        for (const [i, d] of disks.entries()) {
          const src = activeLayer(d);
          await exportImage(
            src.path,
            src.format,
            images[i]!,
            format === 'ova' ? 'vmdk-stream' : format,
            (f) => void this.#jobs.progress(jobId, ((i + f) / disks.length) * 0.9),
          );
        }
      });
      let produced = images;
      let guestOs: OvfGuestOs | undefined;
      if (format === 'ova') {
        produced = [
          await this.#jobs.step(jobId, 'package', async () => {
            guestOs = await this.#guestOs(def.name, disks[0]!);
            return packageOva(def, disks, images, scratch, guestOs);
          }),
        ];
      }
      await this.#jobs.step(jobId, 'publish', async () => {
        for (const [i, f] of produced.entries()) await rename(f, finals[i]!);
        await syncDirectory(dirname(finals[0]!));
      });
      let bytes = 0;
      for (const f of finals) bytes += (await stat(f)).size;
      const result: ExportResult = { vm: def.name, format, files: finals, bytes, ...(guestOs ? { guestOs } : {}) };
      await this.#jobs.succeed(jobId, result);
    } catch (e) {
      await this.#jobs.fail(jobId, { code: isMamoriError(e) ? e.code : 'INTERNAL', message: (e as Error).message });
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }
}

/** VM.ova, or VM-disk<i>.vmdk|vhdx per disk. */
function finalNames(vm: string, format: VmExportFormat, disks: number): string[] {
  if (format === 'ova') return [`${vm}.ova`];
  return Array.from({ length: disks }, (_, i) => `${vm}-disk${i}.${format}`);
}

/** Descriptor first (OVF requires it), then the manifest, then the disks in reference order. */
async function packageOva(
  def: VmDefinition,
  disks: DiskRecord[],
  images: string[],
  scratch: string,
  os: OvfGuestOs,
): Promise<string> {
  const names = images.map((_, i) => `${def.name}-disk${i}.vmdk`);
  const ovf = buildOvf({
    name: def.name,
    vcpus: def.vcpus,
    memoryMiB: def.memoryMiB,
    firmware: def.firmware === 'uefi' ? 'uefi' : 'bios',
    os,
    disks: await Promise.all(
      disks.map(async (d, i) => ({
        href: names[i]!,
        capacityBytes: d.sizeBytes,
        fileSizeBytes: (await stat(images[i]!)).size,
      })),
    ),
    // VMware's E1000 works in every guest; vmxnet3 would need VMware Tools first.
    nics: def.nics.map((n) => ({ model: 'E1000', network: n.network })),
  });
  const ovfName = `${def.name}.ovf`;
  const mfName = `${def.name}.mf`;
  await writeFile(join(scratch, ovfName), ovf);
  const lines = [`SHA256(${ovfName})= ${createHash('sha256').update(ovf).digest('hex')}`];
  for (const [i, img] of images.entries()) lines.push(`SHA256(${names[i]})= ${await sha256File(img)}`);
  await writeFile(join(scratch, mfName), lines.join('\n') + '\n');
  const ova = join(scratch, `${def.name}.ova`);
  await writeTar(ova, [
    { name: ovfName, source: join(scratch, ovfName) },
    { name: mfName, source: join(scratch, mfName) },
    ...images.map((img, i) => ({ name: names[i]!, source: img })),
  ]);
  return ova;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

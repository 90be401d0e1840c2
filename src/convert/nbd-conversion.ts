import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import type { InspectionReport } from '../inspect/inspector.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import { formatNbdUri } from '../nbd/nbd-uri.js';
import { copyNbdSource, inspectNbdSource, nbdSource, type NbdSource } from './nbd-source.js';
import { conversionBlockers } from './compatibility.js';
import type { ConvertInput } from './conversion-input.js';
import type { ConversionJobs, ConvertPlan } from './conversion-job.js';

/**
 * Any NBD server as the source (qemu-nbd, nbdkit's VMware, Hyper-V or cloud plugins, a
 * storage daemon): inspected over NBD, copied into a new pool image through QEMU, registered.
 */
export class NbdConversion {
  #disks: DiskService;
  #vms: VmService;
  #jobs: JobJournal;
  #log: Logger;
  #conversions: ConversionJobs;

  constructor(deps: {
    disks: DiskService;
    vms: VmService;
    jobs: JobJournal;
    log: Logger;
    conversions: ConversionJobs;
  }) {
    this.#disks = deps.disks;
    this.#vms = deps.vms;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    this.#conversions = deps.conversions;
  }

  /** The source as the compatibility report names it (the URI in canonical form), and its inspection. */
  async check(
    input: Pick<ConvertInput, 'source' | 'tls' | 'convergeBelowMiB'>,
  ): Promise<{ source: string; report: InspectionReport }> {
    const src = await this.#source(input);
    const report = await this.#inspect(src);
    return { source: formatNbdUri(src.uri), report };
  }

  async start(input: ConvertInput): Promise<Job> {
    const src = await this.#source(input);
    if (await this.#vms.repo.findByName(input.name))
      throw new MamoriError('VM_EXISTS', `a VM named ${input.name} already exists; choose another --name`);
    const report = await this.#inspect(src);
    const blockers = conversionBlockers(report);
    const shown = formatNbdUri(src.uri);
    if (blockers.length > 0)
      throw new MamoriError('INVALID_INPUT', `${shown} cannot be converted: ${blockers.join('; ')}`, {
        details: { blockers },
      });
    const diskName = `${input.name}-disk0`;
    if (await this.#disks.repo.findByName(diskName))
      throw new MamoriError(
        'DISK_EXISTS',
        `a disk named ${diskName} already exists; choose another --name or delete that disk`,
      );
    const disk = await this.#disks.create({ name: diskName, sizeBytes: report.size, format: input.format ?? 'qcow2' });
    const job = await this.#conversions.createOwning(diskName, input.name, input.start === true);
    // The context keeps the URI (which holds no secret: query keys are refused), never the TLS key.
    await this.#conversions.setContext(job.id, { source: shown, inspection: report, disks: [diskName] });
    let progressAt = 0;
    const copy = async (): Promise<undefined> => {
      const c = await copyNbdSource(src, disk, {
        runDir: this.#conversions.runDir(job.id),
        onProgress: (f) => {
          if (Date.now() - progressAt < 250) return;
          progressAt = Date.now();
          void this.#jobs.progress(job.id, f * 0.95).catch(() => undefined);
        },
      });
      this.#log.info({ job: job.id, source: shown, ...c }, 'nbd source copied');
      return undefined;
    };
    const plan: ConvertPlan = {
      diskNames: [diskName],
      copy,
      firmware: report.firmware,
      memoryMiB: input.memoryMiB,
      vcpus: input.vcpus,
    };
    this.#conversions.launch(job.id, input, report, plan);
    return job;
  }

  /** The NBD URI parsed strictly; a unix socket is a host path, judged by the site's policy. */
  async #source(input: Pick<ConvertInput, 'source' | 'tls' | 'convergeBelowMiB'>): Promise<NbdSource> {
    if (input.convergeBelowMiB !== undefined)
      throw new MamoriError('INVALID_INPUT', 'convergeBelowMiB is for P2V agents (with agentKey) only');
    const src = nbdSource(input.source, input.tls);
    if (src.uri.transport === 'unix')
      return { ...src, uri: { ...src.uri, socket: (await this.#disks.hostPaths.nbdSocket(src.uri.socket)).path } };
    return src;
  }

  /** Inspects an NBD source; a plain nbd:// refused for lack of TLS says what to give instead. */
  async #inspect(src: NbdSource): Promise<InspectionReport> {
    try {
      return await inspectNbdSource(src);
    } catch (e) {
      if (!isMamoriError(e, 'NBD_TLS_REQUIRED')) throw e;
      throw new MamoriError(
        'INVALID_INPUT',
        `${formatNbdUri(src.uri)} requires TLS: write nbds:// (or nbds+unix://) with --tls-creds DIR; a machine served by \`mamori p2v-agent\` is converted with --agent-key KEY`,
        { cause: e },
      );
    }
  }
}

import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import type { InspectionReport } from '../inspect/inspector.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import type { Logger } from '../core/logger.js';
import { looksLikeNbdUri } from '../nbd/nbd-uri.js';
import { compatibilityWarnings, conversionBlockers, guestHasVirtioBlk, guestHasVirtioNet } from './compatibility.js';
import type { CheckInput, ConvertInput } from './conversion-input.js';
import { ConversionJobs } from './conversion-job.js';
import { ImageConversion } from './image-conversion.js';
import { NbdConversion } from './nbd-conversion.js';
import { P2vConversion } from './p2v-conversion.js';

/**
 * The compatibility report, answered before anything is copied or made: blockers refuse the
 * conversion, warnings (degradations) say what the VM will lack.
 */
export interface CompatibilityReport {
  /** The source as judged: the canonical path, or the NBD URI in canonical form. */
  source: string;
  blockers: string[];
  warnings: string[];
  /** What the VM would get, by the inspection of its boot disk. */
  firmware: 'uefi' | 'bios';
  diskBus: 'virtio' | 'sata';
  nicModel: 'virtio-net-pci' | 'e1000';
  disks: number;
  inspection: InspectionReport;
}

/**
 * Converts a physical disk or a VMware/Hyper-V image into a VM of this site (vCenter
 * Converter's job, virt-v2v's rules): inspect first (firmware, guest OS, drivers), copy the
 * disk into the pool through qemu-img (sparse, with progress), then register a VM that
 * follows the inspection: OVMF for UEFI sources, SeaBIOS otherwise, a pinned machine type,
 * virtio NIC where the guest has the drivers, e1000 otherwise. A failure at any step
 * removes what the earlier ones made: no half-created VM or disk is left.
 *
 * This is the front: what every source shares (names, machine type, the report) is judged
 * here; each kind of source (a host path, an NBD server, a P2V agent) has its own pipeline,
 * and all of them end in the one conversion job (conversion-job.ts).
 */
export class ConversionService {
  #vms: VmService;
  #resolveMachineType: (requested: string) => Promise<string>;
  #image: ImageConversion;
  #nbd: NbdConversion;
  #p2v: P2vConversion;

  /** `runDir`: where conversions keep scratch state (the P2V target's storage daemon). */
  constructor(deps: {
    disks: DiskService;
    vms: VmService;
    jobs: JobJournal;
    log: Logger;
    runDir: string;
    resolveMachineType: (requested: string) => Promise<string>;
  }) {
    this.#resolveMachineType = deps.resolveMachineType;
    this.#vms = deps.vms;
    const conversions = new ConversionJobs(deps);
    this.#image = new ImageConversion({ ...deps, conversions });
    this.#nbd = new NbdConversion({ ...deps, conversions });
    this.#p2v = new P2vConversion({ ...deps, conversions });
  }

  /**
   * The compatibility report alone (`mamori convert --check`): the source inspected, nothing
   * copied or made. Bad input still throws (a path the site may not read, a bad URI); what
   * the inspection finds comes back as blockers and warnings.
   */
  async check(input: CheckInput): Promise<CompatibilityReport> {
    if (input.name !== undefined) assertValidName('VM', input.name);
    const blockers: string[] = [];
    await this.#checkMachineType(input.machineType).catch((e: unknown) => {
      if (!isMamoriError(e, 'INVALID_INPUT')) throw e;
      blockers.push(e.message);
    });
    if (input.name !== undefined && (await this.#vms.repo.findByName(input.name)))
      blockers.push(`a VM named ${input.name} already exists; choose another --name`);
    let source: string;
    let report: InspectionReport;
    let disks = 1;
    const extra: string[] = [];
    const nbd = typeof input.source === 'string' && looksLikeNbdUri(input.source);
    if (input.tls !== undefined && (!nbd || input.agentKey !== undefined))
      throw new MamoriError(
        'INVALID_INPUT',
        'tls is for nbds:// and nbds+unix:// sources only (a P2V agent brings its own TLS)',
      );
    if (nbd && input.agentKey !== undefined) {
      report = await this.#p2v.check({ source: input.source, agentKey: input.agentKey });
      source = input.source;
    } else if (nbd) {
      ({ source, report } = await this.#nbd.check(input));
    } else {
      const image = await this.#image.check(input);
      ({ source, report, disks } = image);
      extra.push(...image.warnings);
      blockers.push(...image.blockers);
    }
    blockers.push(...conversionBlockers(report));
    return {
      source,
      blockers,
      warnings: [...compatibilityWarnings(report), ...extra],
      disks,
      inspection: report,
      firmware: report.firmware,
      diskBus: guestHasVirtioBlk(report) ? 'virtio' : 'sata',
      nicModel: guestHasVirtioNet(report) ? 'virtio-net-pci' : 'e1000',
    };
  }

  /** Checks and inspects now (bad input and blockers are answered at once), converts as a job. */
  async start(input: ConvertInput): Promise<Job> {
    assertValidName('VM', input.name);
    await this.#checkMachineType(input.machineType);
    if (typeof input.source === 'string' && looksLikeNbdUri(input.source)) {
      // An agent key makes nbd://HOST:PORT a mamori P2V agent; without one it is any NBD server.
      return input.agentKey !== undefined ? this.#p2v.start(input) : this.#nbd.start(input);
    }
    return this.#image.start(input);
  }

  /**
   * Part of the compatibility report, answered before anything is copied: a machine type
   * this site's QEMU lacks (a VM made on a newer QEMU asks for pc-q35-9.0 here) blocks.
   */
  async #checkMachineType(requested: string | undefined): Promise<void> {
    if (requested === undefined) return;
    try {
      await this.#resolveMachineType(requested);
    } catch (e) {
      if (!isMamoriError(e, 'INVALID_INPUT')) throw e;
      const valid = (e.details?.['valid'] as string[] | undefined) ?? [];
      const newest = valid
        .filter((v) => /^pc-(q35|i440fx)-\d/.test(v))
        .sort()
        .slice(-2);
      throw new MamoriError(
        'INVALID_INPUT',
        `this site's QEMU has no machine type ${requested}: convert with --machine q35 (${newest.join(' or ') || 'what it offers'}), or upgrade QEMU on this site first`,
        { details: { requested, blockers: [`machine type ${requested} is not available here`], valid } },
      );
    }
  }
}

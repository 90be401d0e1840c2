import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { openSource } from '../inspect/image-source.js';
import { inspectDisk, type InspectionReport } from '../inspect/inspector.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import type { Logger } from '../core/logger.js';
import type { ImageFormat } from '../disks/disk-record.js';
import { cachedReader } from '../inspect/image-source.js';
import { P2vAgentClient } from './p2v-agent-client.js';
import { parseAgentUrl } from './p2v-protocol.js';
import { pullFromAgent } from './p2v-pull.js';
import type { ConvergeResult, ConvergePass } from './p2v-converge.js';
import { join } from 'node:path';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import { checkUntrustedImage, untrustedImageInfo } from '../qemu/qemu-img-read.js';
import { vetUntrustedImage } from '../images/untrusted-image.js';
import { readOvfSource } from './ovf-source.js';
import { compatibilityWarnings, conversionBlockers, guestHasVirtioBlk, guestHasVirtioNet } from './compatibility.js';
import { looksLikeNbdUri, formatNbdUri } from '../nbd/nbd-uri.js';
import type { NbdTlsMaterial } from '../nbd/nbd-tls-creds.js';
import { copyNbdSource, inspectNbdSource, nbdSource, type NbdSource } from './nbd-source.js';

/** Disks a converted VM may have (virtio-blk slots we hand out; SATA takes 6). */
const MAX_DISKS = 16;

export const CONVERT_JOB = 'vm-convert';

export interface ConvertInput {
  /**
   * Absolute path on the site's host (a block device or an image QEMU reads); any NBD server
   * as nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH (nbds: with TLS); or,
   * with agentKey, a P2V agent's nbd://HOST:PORT.
   */
  source: string;
  /** The key `mamori p2v-agent` printed: makes an nbd://HOST:PORT source a P2V agent. */
  agentKey?: string;
  /** For nbds:// and nbds+unix:// sources: the CA, and a client certificate if the server verifies clients. */
  tls?: NbdTlsMaterial;
  /** P2V: the remainder below which the passes stop and the frozen last pass runs (default 64 MiB). */
  convergeBelowMiB?: number;
  /** A QEMU machine type (`pc-q35-7.2`) or alias (`q35`, `pc`); default q35, pinned to its version. */
  machineType?: string;
  name: string;
  format?: ImageFormat;
  start?: boolean;
  memoryMiB?: number;
  vcpus?: number;
}

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

/** What `convert --check` asks about: a source as `start` takes it, no VM name needed. */
export type CheckInput = Omit<ConvertInput, 'name' | 'start' | 'format' | 'convergeBelowMiB'> & { name?: string };

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

/** What a conversion turns into: disks, firmware and size of the VM, and how its disks are copied. */
interface ConvertPlan {
  diskNames: string[];
  firmware: 'uefi' | 'bios';
  memoryMiB: number | undefined;
  vcpus: number | undefined;
  descriptor?: ConvertResult['descriptor'];
  copy: () => Promise<ConvergeResult | undefined>;
}

/** What a P2V conversion keeps in its job context, for progress and for recovery after a crash. */
interface P2vContext {
  disk: string;
  passes: ConvergePass[];
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

  #runDir: string;
  #resolveMachineType: (requested: string) => Promise<string>;

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
    this.#disks = deps.disks;
    this.#vms = deps.vms;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    this.#runDir = deps.runDir;
    this.#jobs.registerRecovery(CONVERT_JOB, (job) => this.#recover(job));
  }

  /** The conversion's job; if it cannot be made, the disk made for it goes too (nothing half-created is left). */
  async #jobOwning(diskName: string, vmName: string, start: boolean): Promise<Job> {
    try {
      return await this.#jobs.create(CONVERT_JOB, vmName, ['copy', 'register', ...(start ? ['start'] : [])]);
    } catch (e) {
      await this.#disks.delete(diskName).catch(() => undefined);
      throw e;
    }
  }

  /**
   * A conversion cut by a crash never registered its VM (or did, and only the start was
   * left): the copied disk goes unless a VM holds it, and a P2V's storage daemon is stopped.
   */
  async #recover(job: Job): Promise<string> {
    const registered = job.steps.some((s) => s.name === 'register' && s.state === 'done');
    const ctx = job.context as { p2v?: P2vContext; disks?: string[] } | null;
    const runDir = join(this.#runDir, job.id);
    await StorageDaemon.killLeftover({
      qmpSocket: join(runDir, 'qmp.sock'),
      pidFile: join(runDir, 'qemu-storage-daemon.pid'),
    }).catch(() => undefined);
    const disks = ctx?.p2v ? [ctx.p2v.disk] : (ctx?.disks ?? []);
    if (!registered) for (const d of disks) await this.#disks.delete(d).catch(() => undefined);
    return registered
      ? 'the site server stopped after the VM was registered; it is there, start it yourself'
      : 'the site server stopped during the conversion; the partial copy was removed, run it again';
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
      const at = parseAgentUrl(input.source);
      if (at === null)
        throw new MamoriError(
          'INVALID_INPUT',
          `source ${JSON.stringify(input.source)} is not nbd://HOST:PORT as \`mamori p2v-agent\` prints it`,
        );
      const agent = await P2vAgentClient.connect(at.host, at.port, input.agentKey);
      const nbd = await agent.openNbd();
      try {
        report = await inspectDisk(cachedReader(nbd));
      } finally {
        await nbd.disconnect().catch(() => undefined);
      }
      source = input.source;
    } else if (nbd) {
      const src = await this.#nbdSource(input);
      report = await this.#inspectNbd(src);
      source = formatNbdUri(src.uri);
    } else {
      if (typeof input.source !== 'string' || !input.source.startsWith('/'))
        throw new MamoriError(
          'INVALID_INPUT',
          'source must be an absolute path on the site server host (a block device or an image), or an NBD URI (nbd://HOST[:PORT][/EXPORT], nbd+unix:///EXPORT?socket=PATH)',
        );
      source = (await this.#disks.hostPaths.image(input.source)).path;
      const ovf = await readOvfSource(source);
      const sources: { file: string; member?: { offset: number; size: number } }[] = ovf
        ? ovf.disks
        : [{ file: source }];
      disks = sources.length;
      report = await inspectSource(sources[0]!.file, sources[0]!.member);
      if (ovf?.system.warnings) extra.push(...ovf.system.warnings);
      if (sources.length > MAX_DISKS) blockers.push(`it has ${sources.length} disks; a VM takes at most ${MAX_DISKS}`);
      else if (!guestHasVirtioBlk(report) && sources.length > 6)
        blockers.push(
          `this guest needs SATA disks (no virtio driver) and SATA takes at most 6; it has ${sources.length}`,
        );
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
      return input.agentKey !== undefined ? this.#startP2v(input) : this.#startNbd(input);
    }
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
    const job = await this.#jobs.create(CONVERT_JOB, input.name, [
      'copy',
      'register',
      ...(input.start ? ['start'] : []),
    ]);
    const descriptor = ovf
      ? {
          vcpus: ovf.system.vcpus,
          memoryMiB: ovf.system.memoryMiB,
          firmware: ovf.system.firmware,
          warnings: ovf.system.warnings ?? [],
        }
      : undefined;
    await this.#jobs.setContext(job.id, {
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
    void this.#run(job.id, input, report, plan).catch((e: unknown) =>
      this.#log.error({ job: job.id, err: e }, 'conversion failed outside its steps'),
    );
    return job;
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

  /** The NBD URI parsed strictly; a unix socket is a host path, judged by the site's policy. */
  async #nbdSource(input: Pick<ConvertInput, 'source' | 'tls' | 'convergeBelowMiB'>): Promise<NbdSource> {
    if (input.convergeBelowMiB !== undefined)
      throw new MamoriError('INVALID_INPUT', 'convergeBelowMiB is for P2V agents (with agentKey) only');
    const src = nbdSource(input.source, input.tls);
    if (src.uri.transport === 'unix')
      return { ...src, uri: { ...src.uri, socket: (await this.#disks.hostPaths.nbdSocket(src.uri.socket)).path } };
    return src;
  }

  /** Inspects an NBD source; a plain nbd:// refused for lack of TLS says what to give instead. */
  async #inspectNbd(src: NbdSource): Promise<InspectionReport> {
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

  /**
   * Any NBD server as the source (qemu-nbd, nbdkit's VMware, Hyper-V or cloud plugins, a
   * storage daemon): inspected over NBD, copied into a new pool image through QEMU, registered.
   */
  async #startNbd(input: ConvertInput): Promise<Job> {
    const src = await this.#nbdSource(input);
    if (await this.#vms.repo.findByName(input.name))
      throw new MamoriError('VM_EXISTS', `a VM named ${input.name} already exists; choose another --name`);
    const report = await this.#inspectNbd(src);
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
    const job = await this.#jobOwning(diskName, input.name, input.start === true);
    // The context keeps the URI (which holds no secret: query keys are refused), never the TLS key.
    await this.#jobs.setContext(job.id, { source: shown, inspection: report, disks: [diskName] });
    let progressAt = 0;
    const copy = async (): Promise<undefined> => {
      const c = await copyNbdSource(src, disk, {
        runDir: join(this.#runDir, job.id),
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
    void this.#run(job.id, input, report, plan).catch((e: unknown) =>
      this.#log.error({ job: job.id, err: e }, 'conversion failed outside its steps'),
    );
    return job;
  }

  /**
   * P2V of a running machine: the agent is checked (its key proves its CA), its disk
   * inspected over TLS NBD like any other source, and copied in converging passes.
   */
  async #startP2v(input: ConvertInput): Promise<Job> {
    const at = parseAgentUrl(input.source);
    if (at === null)
      throw new MamoriError(
        'INVALID_INPUT',
        `source ${JSON.stringify(input.source)} is not nbd://HOST:PORT as \`mamori p2v-agent\` prints it`,
      );
    if (input.tls !== undefined)
      throw new MamoriError(
        'INVALID_INPUT',
        'a P2V agent brings its own TLS (proven by its key): give agentKey, not tls',
      );
    const below = input.convergeBelowMiB ?? 64;
    if (!Number.isInteger(below) || below < 0 || below > 1024 * 1024)
      throw new MamoriError('OUT_OF_RANGE', 'convergeBelowMiB must be 0 to 1048576');
    if (await this.#vms.repo.findByName(input.name))
      throw new MamoriError('VM_EXISTS', `a VM named ${input.name} already exists; choose another --name`);
    const agent = await P2vAgentClient.connect(at.host, at.port, input.agentKey ?? '');
    const nbd = await agent.openNbd();
    let report: InspectionReport;
    try {
      report = await inspectDisk(cachedReader(nbd));
    } finally {
      await nbd.disconnect().catch(() => undefined);
    }
    const blockers = conversionBlockers(report);
    if (blockers.length > 0)
      throw new MamoriError('INVALID_INPUT', `${input.source} cannot be converted: ${blockers.join('; ')}`, {
        details: { blockers },
      });
    const diskName = `${input.name}-disk0`;
    const disk = await this.#disks.create({
      name: diskName,
      sizeBytes: agent.hello.sizeBytes,
      format: input.format ?? 'qcow2',
    });
    const job = await this.#jobOwning(diskName, input.name, input.start === true);
    const ctx = {
      source: input.source,
      device: agent.hello.device,
      inspection: report,
      p2v: { disk: diskName, passes: [] as ConvergePass[] },
    };
    await this.#jobs.setContext(job.id, ctx);
    let progressAt = 0;
    const copy = async (): Promise<ConvergeResult> =>
      pullFromAgent(agent, disk, {
        runDir: join(this.#runDir, job.id),
        convergeBelowBytes: below * 1024 * 1024,
        onPass: async (p) => {
          ctx.p2v.passes.push(p);
          await this.#jobs.setContext(job.id, ctx);
          this.#log.info({ job: job.id, ...p }, 'p2v pass done');
        },
        onProgress: (f) => {
          if (Date.now() - progressAt < 250) return;
          progressAt = Date.now();
          void this.#jobs.progress(job.id, f).catch(() => undefined);
        },
      });
    const plan: ConvertPlan = {
      diskNames: [diskName],
      copy,
      firmware: report.firmware,
      memoryMiB: input.memoryMiB,
      vcpus: input.vcpus,
    };
    void this.#run(job.id, input, report, plan).catch((e: unknown) =>
      this.#log.error({ job: job.id, err: e }, 'conversion failed outside its steps'),
    );
    return job;
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

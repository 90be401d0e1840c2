import type { DiskService } from '../disks/disk-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { JobJournal, Job } from '../jobs/job-journal.js';
import { inspectDisk, type InspectionReport } from '../inspect/inspector.js';
import { cachedReader } from '../inspect/image-source.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import { P2vAgentClient } from './p2v-agent-client.js';
import { parseAgentUrl } from './p2v-protocol.js';
import { pullFromAgent } from './p2v-pull.js';
import type { ConvergeResult, ConvergePass } from './p2v-converge.js';
import { conversionBlockers } from './compatibility.js';
import type { ConvertInput } from './conversion-input.js';
import type { ConversionJobs, ConvertPlan } from './conversion-job.js';

/**
 * P2V of a running machine: the agent is checked (its key proves its CA), its disk
 * inspected over TLS NBD like any other source, and copied in converging passes.
 */
export class P2vConversion {
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

  /** The agent's disk inspected, for the compatibility report. */
  async check(input: { source: string; agentKey: string }): Promise<InspectionReport> {
    const at = agentAddress(input.source);
    const agent = await P2vAgentClient.connect(at.host, at.port, input.agentKey);
    return inspectAgentDisk(agent);
  }

  async start(input: ConvertInput): Promise<Job> {
    const at = agentAddress(input.source);
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
    const report = await inspectAgentDisk(agent);
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
    const job = await this.#conversions.createOwning(diskName, input.name, input.start === true);
    const ctx = {
      source: input.source,
      device: agent.hello.device,
      inspection: report,
      p2v: { disk: diskName, passes: [] as ConvergePass[] },
    };
    await this.#conversions.setContext(job.id, ctx);
    let progressAt = 0;
    const copy = async (): Promise<ConvergeResult> =>
      pullFromAgent(agent, disk, {
        runDir: this.#conversions.runDir(job.id),
        convergeBelowBytes: below * 1024 * 1024,
        onPass: async (p) => {
          ctx.p2v.passes.push(p);
          await this.#conversions.setContext(job.id, ctx);
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
    this.#conversions.launch(job.id, input, report, plan);
    return job;
  }
}

/** The agent's address, as `mamori p2v-agent` prints it. */
function agentAddress(source: string): { host: string; port: number } {
  const at = parseAgentUrl(source);
  if (at === null)
    throw new MamoriError(
      'INVALID_INPUT',
      `source ${JSON.stringify(source)} is not nbd://HOST:PORT as \`mamori p2v-agent\` prints it`,
    );
  return at;
}

/** The agent's disk inspected over its TLS NBD export, which is closed again before this returns. */
async function inspectAgentDisk(agent: P2vAgentClient): Promise<InspectionReport> {
  const nbd = await agent.openNbd();
  try {
    return await inspectDisk(cachedReader(nbd));
  } finally {
    await nbd.disconnect().catch(() => undefined);
  }
}

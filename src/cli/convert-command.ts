import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { ApiClient } from './api-client.js';
import type { Job } from '../jobs/job-journal.js';
import type { ConvertResult } from '../convert/conversion-service.js';
import { printJson } from './output.js';
import { followJob } from './follow-job.js';
import { MamoriError } from '../core/mamori-error.js';
import { int } from './vm-commands.js';

export const CONVERT_USAGE = `mamori convert SOURCE --name VM [--format qcow2|raw] [--start] [--memory MIB] [--vcpus N]
  SOURCE is a block device or an image (raw, qcow2, vmdk, vhd, vhdx) on the site's host. It is
  inspected first (mamori inspect), copied into the site's pool, and registered as a VM with the
  firmware it boots with (UEFI: OVMF) and a virtio or e1000 NIC by the guest's drivers.`;

/** Converts at the site the CLI talks to (--data DIR or MAMORI_URL), following the job to its end. */
export async function convertCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv, allowPositionals: true, strict: true,
    options: { name: { type: 'string' }, format: { type: 'string' }, start: { type: 'boolean' }, memory: { type: 'string' }, vcpus: { type: 'string' } },
  });
  if (positionals.length !== 1 || !values.name) throw new MamoriError('INVALID_INPUT', `usage: ${CONVERT_USAGE}`);
  const body: Record<string, unknown> = { source: resolve(positionals[0]!), name: values.name };
  if (values.format) body['format'] = values.format;
  if (values.start) body['start'] = true;
  if (values.memory !== undefined) body['memoryMiB'] = int(values.memory, '--memory');
  if (values.vcpus !== undefined) body['vcpus'] = int(values.vcpus, '--vcpus');
  const job = await followJob(api, await api.post<Job>('/conversions', body), `converting ${positionals[0]} to ${values.name}`, json);
  if (json) {
    if (job.state !== 'succeeded') process.exitCode = 1;
    return printJson(job);
  }
  if (job.state !== 'succeeded') throw new MamoriError('PROCESS_FAILED', `conversion failed: ${job.error?.message ?? 'unknown error'}; nothing was left behind`);
  const r = job.result as ConvertResult;
  process.stdout.write(`${r.vm}: ${r.firmware} firmware, disk ${r.disk}, NIC ${r.nicModel}, guest ${r.os.product ?? r.os.type}${r.started ? ', started' : ''}\n`);
  for (const w of r.warnings) process.stdout.write(`warning: ${w}\n`);
}

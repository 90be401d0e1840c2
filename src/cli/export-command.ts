import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { ApiClient } from './api-client.js';
import type { RequestBody } from './api-types.js';
import { asView, type ExportResult } from './server-views.js';
import { formatBytes, printJson } from './output.js';
import { followJob } from './follow-job.js';
import { MamoriError } from '../core/mamori-error.js';

export const EXPORT_USAGE = `mamori export VM --format vmdk|vhdx|ova [--output DIR]
  Writes a stopped VM's disks for VMware (vmdk: monolithic sparse, lsilogic) or Hyper-V
  (vhdx: dynamic), or the whole VM as an OVA (OVF descriptor with vCPUs, memory, firmware
  and NICs, a SHA-256 manifest, streamOptimized VMDKs) for ovftool or vSphere's "Deploy OVF
  Template". DIR is a folder on the site's host (default: the site's DATA/exports).`;

export async function exportCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: { format: { type: 'string' }, output: { type: 'string' } },
  });
  if (positionals.length !== 1 || !values.format) throw new MamoriError('INVALID_INPUT', `usage: ${EXPORT_USAGE}`);
  const vm = positionals[0]!;
  const body: RequestBody<'/vms/{name}/export', 'post'> = {
    // The server checks the format and names the ones it takes.
    format: values.format as RequestBody<'/vms/{name}/export', 'post'>['format'],
  };
  if (values.output) body['directory'] = resolve(values.output);
  const job = await followJob(
    api,
    await api.post('/vms/{name}/export', { path: { name: vm }, body }),
    `exporting ${vm} as ${values.format}`,
    json,
  );
  if (json) {
    if (job.state !== 'succeeded') process.exitCode = 1;
    return printJson(job);
  }
  if (job.state !== 'succeeded')
    throw new MamoriError(
      'PROCESS_FAILED',
      `export failed: ${job.error?.message ?? 'unknown error'}; nothing was left behind`,
    );
  const r = asView<ExportResult>(job.result);
  for (const f of r.files) process.stdout.write(`${f}\n`);
  process.stdout.write(`${r.vm}: ${r.format}, ${formatBytes(r.bytes)}\n`);
}

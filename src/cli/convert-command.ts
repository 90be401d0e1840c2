import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { ApiClient } from './api-client.js';
import type { Job } from '../jobs/job-journal.js';
import type { ConvertResult } from '../convert/conversion-service.js';
import { formatBytes, printJson } from './output.js';
import { followJob } from './follow-job.js';
import { MamoriError } from '../core/mamori-error.js';
import { int } from './vm-commands.js';

export const CONVERT_USAGE = `mamori convert SOURCE [--site SITE] --name VM [--format qcow2|raw] [--start] [--memory MIB] [--vcpus N] [--machine TYPE]
       mamori convert nbd://HOST:PORT --agent-key KEY --name VM [--converge-below MIB] [...]
  SOURCE is a block device, an image (raw, qcow2, vmdk, vhd, vhdx) or an OVA/OVF on the site's
  host. It is inspected first (as 'mamori inspect SOURCE' does), copied into the site's pool, and registered as a
  VM with the firmware it boots with (UEFI: OVMF) and a virtio or e1000 NIC by the guest's
  drivers. An OVA/OVF gives vCPUs, memory and all its disks; --memory and --vcpus override.
  nbd://HOST:PORT is a running machine's disk served by \`mamori p2v-agent\` there: it is copied
  in passes that resend only changed chunks until fewer than --converge-below MiB (default 64)
  change, then a last pass with the machine's filesystems frozen.
  --site names the site that must receive the VM: the command stops if the CLI talks to another.`;

/** Converts at the site the CLI talks to (--data DIR or MAMORI_URL), following the job to its end. */
export async function convertCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv, allowPositionals: true, strict: true,
    options: {
      name: { type: 'string' }, format: { type: 'string' }, start: { type: 'boolean' }, memory: { type: 'string' }, vcpus: { type: 'string' },
      'agent-key': { type: 'string' }, 'converge-below': { type: 'string' }, site: { type: 'string' }, machine: { type: 'string' },
    },
  });
  if (positionals.length !== 1 || !values.name) throw new MamoriError('INVALID_INPUT', `usage: ${CONVERT_USAGE}`);
  const source = positionals[0]!;
  const p2v = source.startsWith('nbd://');
  if (p2v && !values['agent-key']) throw new MamoriError('INVALID_INPUT', `${source} is a P2V agent: give --agent-key, the key \`mamori p2v-agent\` printed`);
  if (!p2v && (values['agent-key'] !== undefined || values['converge-below'] !== undefined)) throw new MamoriError('INVALID_INPUT', '--agent-key and --converge-below are for nbd:// sources (a P2V agent)');
  if (values.site !== undefined) {
    // The source is read where the site runs (a path on its host, or an agent it can reach), so the
    // CLI does not forward: it makes sure it talks to the site the operator meant.
    const here = (await api.get<{ name: string }>('/site/ca')).name;
    if (here !== values.site) {
      throw new MamoriError('INVALID_INPUT', `this CLI talks to site ${here}, not ${values.site}: point it at ${values.site} (--data DIR or MAMORI_URL) and run the conversion there`);
    }
  }
  const body: Record<string, unknown> = { source: p2v ? source : resolve(source), name: values.name };
  if (values['agent-key']) body['agentKey'] = values['agent-key'];
  if (values.machine !== undefined) body['machineType'] = values.machine;
  if (values['converge-below'] !== undefined) body['convergeBelowMiB'] = int(values['converge-below'], '--converge-below');
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
  for (const p of r.p2v?.passes ?? []) {
    const rate = p.seconds > 0 ? ` (${formatBytes(p.sentBytes / p.seconds)}/s)` : '';
    process.stdout.write(`pass ${p.pass}${p.frozen ? ' (frozen)' : ''}: ${formatBytes(p.changedBytes)} changed, ${formatBytes(p.sentBytes)} sent in ${p.seconds.toFixed(1)} s${rate}\n`);
  }
  if (r.p2v) process.stdout.write(`copy: ${r.p2v.consistency}: ${r.p2v.note}\n`);
  process.stdout.write(`${r.vm}: ${r.firmware} firmware, ${r.vcpus} vCPU, ${r.memoryMiB} MiB, disk${r.disks.length > 1 ? 's' : ''} ${r.disks.join(', ')}, ` +
    `NIC ${r.nicModel}, guest ${r.os.product ?? r.os.type}${r.started ? ', started' : ''}\n`);
  for (const w of r.warnings) process.stdout.write(`warning: ${w}\n`);
}

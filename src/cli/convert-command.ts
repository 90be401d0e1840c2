import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { ApiClient } from './api-client.js';
import type { RequestBody } from './api-types.js';
import {
  asView,
  looksLikeNbdUri,
  readTlsCredsDir,
  type CompatibilityReport,
  type ConvertResult,
} from './server-views.js';
import { formatBytes, printJson } from './output.js';
import { followJob } from './follow-job.js';
import { MamoriError } from '../core/mamori-error.js';
import { int } from './vm-commands.js';

export const CONVERT_USAGE = `mamori convert SOURCE [--site SITE] --name VM [--format qcow2|raw] [--start] [--memory MIB] [--vcpus N] [--machine TYPE]
       mamori convert SOURCE --check [--name VM] [--machine TYPE]
       mamori convert nbd://HOST[:PORT][/EXPORT] | nbd+unix:///EXPORT?socket=PATH [--tls-creds DIR] --name VM [...]
       mamori convert nbd://HOST:PORT --agent-key KEY --name VM [--converge-below MIB] [...]
  SOURCE is a block device, an image (raw, qcow2, vmdk, vhd, vhdx) or an OVA/OVF on the site's
  host. It is inspected first and its compatibility report printed (blockers refuse the
  conversion, warnings say what degrades); --check prints only the report and exits, non-zero
  if anything blocks. Then it is copied into the site's pool and registered as a VM with the
  firmware it boots with (UEFI: OVMF) and a virtio or e1000 NIC by the guest's drivers. An
  OVA/OVF gives vCPUs, memory and all its disks; --memory and --vcpus override.
  An NBD URI is a disk any NBD server serves (qemu-nbd, nbdkit, qemu-storage-daemon), read by
  the site: nbds:// and nbds+unix:// use TLS with --tls-creds DIR (QEMU's tls-creds-x509 layout:
  ca-cert.pem, and client-cert.pem with client-key.pem if the server verifies clients); a unix
  socket must lie in one of the site's --allow-import folders.
  With --agent-key, nbd://HOST:PORT is a running machine's disk served by \`mamori p2v-agent\`:
  it is copied in passes that resend only changed chunks until fewer than --converge-below MiB
  (default 64) change, then a last pass with the machine's filesystems frozen.
  --site names the site that must receive the VM: the command stops if the CLI talks to another.`;

/** Converts at the site the CLI talks to (--data DIR or MAMORI_URL), following the job to its end. */
export async function convertCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      name: { type: 'string' },
      format: { type: 'string' },
      start: { type: 'boolean' },
      memory: { type: 'string' },
      vcpus: { type: 'string' },
      'agent-key': { type: 'string' },
      'converge-below': { type: 'string' },
      site: { type: 'string' },
      machine: { type: 'string' },
      check: { type: 'boolean' },
      'tls-creds': { type: 'string' },
    },
  });
  if (positionals.length !== 1 || (!values.name && !values.check))
    throw new MamoriError('INVALID_INPUT', `usage: ${CONVERT_USAGE}`);
  const source = positionals[0]!;
  // An NBD URI is never taken for a file name; the site parses it strictly.
  const nbd = looksLikeNbdUri(source);
  const p2v = nbd && values['agent-key'] !== undefined;
  if (!p2v && values['converge-below'] !== undefined)
    throw new MamoriError('INVALID_INPUT', '--converge-below is for P2V agents (nbd://HOST:PORT with --agent-key)');
  if (!nbd && values['agent-key'] !== undefined)
    throw new MamoriError('INVALID_INPUT', '--agent-key is for nbd://HOST:PORT sources (a P2V agent)');
  if ((!nbd || p2v) && values['tls-creds'] !== undefined)
    throw new MamoriError(
      'INVALID_INPUT',
      '--tls-creds is for nbds:// and nbds+unix:// sources (a P2V agent brings its own TLS)',
    );
  if (values.site !== undefined) {
    // The source is read where the site runs (a path on its host, or an agent it can reach), so the
    // CLI does not forward: it makes sure it talks to the site the operator meant.
    const here = (await api.get('/site/ca')).name;
    if (here !== values.site) {
      throw new MamoriError(
        'INVALID_INPUT',
        `this CLI talks to site ${here}, not ${values.site}: point it at ${values.site} (--data DIR or MAMORI_URL) and run the conversion there`,
      );
    }
  }
  // The name comes after the compatibility check, which takes the same body without it.
  const body: Omit<RequestBody<'/conversions', 'post'>, 'name'> & { name?: string } = {
    source: nbd ? source : resolve(source),
  };
  if (values['agent-key']) body['agentKey'] = values['agent-key'];
  if (values['tls-creds'] !== undefined) body['tls'] = await readTlsCredsDir(resolve(values['tls-creds']));
  if (values.machine !== undefined) body['machineType'] = values.machine;
  // The compatibility report comes before any copy: asked for alone, or printed first.
  const report = asView<CompatibilityReport>(
    await api.post('/conversions/check', { body: values.check && values.name ? { ...body, name: values.name } : body }),
  );
  if (values.check) {
    if (json) printJson(report);
    else printCompatibility(report);
    if (report.blockers.length > 0) process.exitCode = 1;
    return;
  }
  if (!json) printCompatibility(report);
  if (report.blockers.length > 0) {
    if (json) printJson({ compatibility: report });
    throw new MamoriError('INVALID_INPUT', `${report.source} cannot be converted: ${report.blockers.join('; ')}`, {
      details: { blockers: report.blockers },
    });
  }
  body['name'] = values.name!;
  if (values['converge-below'] !== undefined)
    body['convergeBelowMiB'] = int(values['converge-below'], '--converge-below');
  // The server checks the choice and names the ones it takes.
  if (values.format) body['format'] = values.format as RequestBody<'/conversions', 'post'>['format'];
  if (values.start) body['start'] = true;
  if (values.memory !== undefined) body['memoryMiB'] = int(values.memory, '--memory');
  if (values.vcpus !== undefined) body['vcpus'] = int(values.vcpus, '--vcpus');
  const job = await followJob(
    api,
    await api.post('/conversions', { body: { ...body, name: values.name! } }),
    `converting ${positionals[0]} to ${values.name}`,
    json,
  );
  if (json) {
    if (job.state !== 'succeeded') process.exitCode = 1;
    return printJson({ ...job, compatibility: report });
  }
  if (job.state !== 'succeeded')
    throw new MamoriError(
      'PROCESS_FAILED',
      `conversion failed: ${job.error?.message ?? 'unknown error'}; nothing was left behind`,
    );
  const r = asView<ConvertResult>(job.result);
  for (const p of r.p2v?.passes ?? []) {
    const rate = p.seconds > 0 ? ` (${formatBytes(p.sentBytes / p.seconds)}/s)` : '';
    process.stdout.write(
      `pass ${p.pass}${p.frozen ? ' (frozen)' : ''}: ${formatBytes(p.changedBytes)} changed, ${formatBytes(p.sentBytes)} sent in ${p.seconds.toFixed(1)} s${rate}\n`,
    );
  }
  if (r.p2v) process.stdout.write(`copy: ${r.p2v.consistency}: ${r.p2v.note}\n`);
  // The warnings were printed with the report; the result adds only what the copy found (P2V consistency).
  process.stdout.write(
    `${r.vm}: ${r.firmware} firmware, ${r.vcpus} vCPU, ${r.memoryMiB} MiB, disk${r.disks.length > 1 ? 's' : ''} ${r.disks.join(', ')}, ` +
      `NIC ${r.nicModel}, guest ${r.os.product ?? r.os.type}${r.started ? ', started' : ''}\n`,
  );
  for (const w of r.warnings.filter((x) => !report.warnings.includes(x))) process.stdout.write(`warning: ${w}\n`);
}

/** The report as a person reads it: what blocks, what degrades, what the VM would be. */
function printCompatibility(r: CompatibilityReport): void {
  const os = r.inspection.os;
  const guest = os.type === 'unknown' ? 'no guest OS found' : `guest ${os.product ?? os.distro}`;
  process.stdout.write(
    `compatibility of ${r.source}: ${r.blockers.length === 0 ? 'can be converted' : 'cannot be converted'} ` +
      `(${guest}; ${r.firmware} firmware, ${r.diskBus} disk${r.disks > 1 ? `s (${r.disks})` : ''}, ${r.nicModel} NIC)\n`,
  );
  for (const b of r.blockers) process.stdout.write(`blocker: ${b}\n`);
  for (const w of r.warnings) process.stdout.write(`warning: ${w}\n`);
}

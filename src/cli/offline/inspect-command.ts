import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { openSource } from '../../inspect/image-source.js';
import { inspectDisk, type InspectionReport } from '../../inspect/inspector.js';
import { formatBytes, printFields, printJson, printTable } from '../output.js';
import { MamoriError } from '../../core/mamori-error.js';
import { formatNbdUri, looksLikeNbdUri } from '../../nbd/nbd-uri.js';
import { readTlsCredsDir } from '../../nbd/nbd-tls-creds.js';
import { inspectNbdSource, nbdSource } from '../../convert/nbd-source.js';

export const INSPECT_USAGE = `mamori inspect SOURCE [--tls-creds DIR] [--json]
  SOURCE is a block device, an image (raw, qcow2, vmdk, vhd, vhdx), or a disk any NBD server
  serves: nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH, and nbds:// or
  nbds+unix:// for TLS with --tls-creds DIR (QEMU's tls-creds-x509 layout: ca-cert.pem, and
  client-cert.pem with client-key.pem if the server verifies clients). Runs here, needs no site.`;

/** `mamori inspect SOURCE`: what a disk or image is and boots; local, needs no site. */
export async function inspectCommand(argv: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: { 'tls-creds': { type: 'string' } },
  });
  if (positionals.length !== 1 || !positionals[0]) throw new MamoriError('INVALID_INPUT', `usage: ${INSPECT_USAGE}`);
  const given = positionals[0];
  let report: InspectionReport;
  let shown: string;
  let format: string;
  let kind: string;
  const started = Date.now();
  if (looksLikeNbdUri(given)) {
    // An NBD URI is never taken for a file name: it parses strictly, or is refused.
    const tls = values['tls-creds'] !== undefined ? await readTlsCredsDir(resolve(values['tls-creds'])) : undefined;
    const src = nbdSource(given, tls);
    report = await inspectNbdSource(src);
    shown = formatNbdUri(src.uri);
    format = 'raw';
    kind = 'nbd';
  } else {
    if (values['tls-creds'] !== undefined)
      throw new MamoriError('INVALID_INPUT', '--tls-creds is for nbds:// and nbds+unix:// sources');
    shown = resolve(given);
    const source = await openSource(shown);
    try {
      report = await inspectDisk(source.reader);
    } finally {
      await source.close();
    }
    format = source.format;
    kind = source.kind;
  }
  const out = { source: shown, format, kind, ...report, durationMs: Date.now() - started };
  if (json) return printJson(out);
  const os = report.os;
  printFields({
    source: `${shown} (${format}, ${formatBytes(report.size)})`,
    'partition table': `${report.partitionTable}${report.gptHeader === 'backup' ? ' (from the backup header)' : ''}`,
    firmware: `${report.firmware}: ${report.firmwareReason}`,
    'boot loader': `${report.bootLoader.detail}${report.bootLoader.files.length > 0 ? `: ${report.bootLoader.files.join(', ')}` : ''}`,
    os:
      os.type === 'unknown'
        ? 'not found'
        : `${os.product ?? os.distro} (${os.distro} ${os.major ?? '?'}.${os.minor ?? '?'}) on ${os.rootVolume ? `logical volume ${os.rootVolume} (partition ${os.root})` : `partition ${os.root}`}`,
    hostname: os.hostname ?? '-',
    kernels: os.kernels.join(', ') || '-',
  });
  printTable(
    report.partitions.map((p) => ({
      '#': p.number,
      start: p.start,
      size: formatBytes(p.size),
      type: p.type,
      filesystem: p.filesystem ?? '-',
      label: p.label ?? '',
      name: p.name ?? '',
    })),
    ['#', 'start', 'size', 'type', 'filesystem', 'label', 'name'],
  );
  if (report.logicalVolumes.length > 0) {
    printTable(
      report.logicalVolumes.map((v) => ({
        volume: `${v.vg}/${v.name}`,
        size: formatBytes(v.size),
        filesystem: v.filesystem ?? '-',
        label: v.label ?? '',
        on: v.partitions.map((n) => `#${n}`).join(' '),
      })),
      ['volume', 'size', 'filesystem', 'label', 'on'],
    );
  }
  for (const w of report.warnings) process.stdout.write(`warning: ${w}\n`);
}

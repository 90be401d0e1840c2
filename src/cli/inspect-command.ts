import { resolve } from 'node:path';
import { openSource } from '../inspect/image-source.js';
import { inspectDisk, type InspectionReport } from '../inspect/inspector.js';
import { formatBytes, printFields, printJson, printTable } from './output.js';
import { MamoriError } from '../core/mamori-error.js';

/** `mamori inspect SOURCE`: what a disk or image is and boots; local, needs no site. */
export async function inspectCommand(argv: string[], json: boolean): Promise<void> {
  if (argv.length !== 1 || !argv[0]) throw new MamoriError('INVALID_INPUT', 'usage: mamori inspect SOURCE [--json]   (a block device, or an image: raw, qcow2, vmdk, vhd, vhdx)');
  const path = resolve(argv[0]);
  const source = await openSource(path);
  let report: InspectionReport;
  const started = Date.now();
  try {
    report = await inspectDisk(source.reader);
  } finally {
    await source.close();
  }
  const out = { source: path, format: source.format, kind: source.kind, ...report, durationMs: Date.now() - started };
  if (json) return printJson(out);
  const os = report.os;
  printFields({
    source: `${path} (${source.format}, ${formatBytes(report.size)})`,
    'partition table': `${report.partitionTable}${report.gptHeader === 'backup' ? ' (from the backup header)' : ''}`,
    firmware: `${report.firmware}: ${report.firmwareReason}`,
    'boot loader': `${report.bootLoader.detail}${report.bootLoader.files.length > 0 ? `: ${report.bootLoader.files.join(', ')}` : ''}`,
    os: os.type === 'unknown' ? 'not found' : `${os.product ?? os.distro} (${os.distro} ${os.major ?? '?'}.${os.minor ?? '?'}) on ${os.rootVolume ? `logical volume ${os.rootVolume} (partition ${os.root})` : `partition ${os.root}`}`,
    hostname: os.hostname ?? '-',
    kernels: os.kernels.join(', ') || '-',
  });
  printTable(report.partitions.map((p) => ({
    '#': p.number, start: p.start, size: formatBytes(p.size), type: p.type, filesystem: p.filesystem ?? '-', label: p.label ?? '', name: p.name ?? '',
  })), ['#', 'start', 'size', 'type', 'filesystem', 'label', 'name']);
  if (report.logicalVolumes.length > 0) {
    printTable(report.logicalVolumes.map((v) => ({
      volume: `${v.vg}/${v.name}`, size: formatBytes(v.size), filesystem: v.filesystem ?? '-', label: v.label ?? '', on: v.partitions.map((n) => `#${n}`).join(' '),
    })), ['volume', 'size', 'filesystem', 'label', 'on']);
  }
  for (const w of report.warnings) process.stdout.write(`warning: ${w}\n`);
}

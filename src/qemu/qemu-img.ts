import { syncFile } from '../core/durable-sync.js';
import { runProcess } from '../core/run-process.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile: string | null;
  /** qcow2's corrupt bit; true means QEMU refuses to write it. */
  corrupt: boolean;
}

const QEMU_IMG = 'qemu-img';

/**
 * An image from outside the site as QEMU must open it: the format pinned (never probed) and
 * backing files cut (`backing: null`), over the plain file, or over a byte range of it (a VMDK
 * inside an OVA). Build one with vetUntrustedImage (src/images/untrusted-image.ts), which has
 * read the headers and refused every reference leaving the image first; a split VMDK's
 * extents, proven to sit in the descriptor's own folder, are still opened by QEMU beside it.
 */
export interface UntrustedImageSpec {
  file: string;
  /** qemu-img's format name, decided by mamori from the headers or given by the person. */
  format: string;
  member?: { offset: number; size: number };
  /** A block device takes QEMU's host_device protocol driver, a file its file driver. */
  blockDevice?: boolean;
}

/**
 * The `json:` filename for an untrusted image; always used with `-f spec.format`. Checked
 * with qemu-img 7.2: a qcow2 whose backing is a host file reads that file's bytes when opened
 * by name, and zeros with `backing: null` (qemu-img info still reports the backing name it
 * read from the header, without opening it).
 */
export function untrustedImageName(spec: UntrustedImageSpec): string {
  const protocol = { driver: spec.blockDevice ? 'host_device' : 'file', filename: spec.file };
  const file = spec.member ? { driver: 'raw', offset: spec.member.offset, size: spec.member.size, file: protocol } : protocol;
  return `json:${JSON.stringify({ backing: null, file })}`;
}

/** qemu-img info of an untrusted image (format pinned, backing cut). */
export async function untrustedImageInfo(spec: UntrustedImageSpec): Promise<ImageInfo> {
  return imageInfo(untrustedImageName(spec), spec.format, spec.file);
}

/** qemu-img check of an untrusted image (format pinned, backing cut). */
export async function checkUntrustedImage(spec: UntrustedImageSpec): Promise<void> {
  await checkImage(untrustedImageName(spec), spec.format, spec.file);
}

/** Copies an untrusted image into a new site image (format pinned, backing cut); see convertImage. */
export async function convertUntrustedImage(spec: UntrustedImageSpec, dst: string, dstFormat: 'qcow2' | 'raw', onProgress?: (fraction: number) => void): Promise<void> {
  await convertImage(untrustedImageName(spec), spec.format, dst, dstFormat, onProgress);
}

/**
 * qemu-img info; a file QEMU cannot open becomes IMAGE_UNREADABLE naming QEMU's reason.
 * Opens `path` as QEMU names it: for an image from outside the site use untrustedImageInfo.
 */
export async function imageInfo(path: string, format?: string, label = path): Promise<ImageInfo> {
  const args = ['info', '--output=json', '-U'];
  if (format) args.push('-f', format);
  args.push(path);
  try {
    const { stdout } = await runProcess(QEMU_IMG, args, { timeoutMs: 30_000 });
    const j = JSON.parse(stdout) as Record<string, unknown>;
    const specific = (j['format-specific'] as { data?: { corrupt?: boolean } } | undefined)?.data;
    return {
      format: String(j['format']),
      virtualSize: Number(j['virtual-size']),
      actualSize: Number(j['actual-size'] ?? 0),
      backingFile: (j['backing-filename'] as string | undefined) ?? null,
      corrupt: specific?.corrupt === true,
    };
  } catch (e) {
    throw asImageError(e, label);
  }
}

export async function createImage(path: string, format: 'qcow2' | 'raw', sizeBytes: number): Promise<void> {
  const args = ['create', '-q', '-f', format];
  // Extended L2 with 128k clusters: first writes into fresh images and overlays are faster (notes/qemu-7.2.md).
  if (format === 'qcow2') args.push('-o', 'cluster_size=131072,extended_l2=on');
  args.push(path, String(sizeBytes));
  await runProcess(QEMU_IMG, args, { timeoutMs: 60_000 });
}

/**
 * Copies an image through QEMU's block layer. -W (out-of-order writes) is what makes
 * it fast here; -n --target-is-zero is not used so the target is created fresh.
 * The target is fsynced once it is complete (durable-sync.ts says why not -t writeback).
 * `onProgress` gets 0..1 from qemu-img's -p output.
 */
export async function convertImage(
  src: string,
  srcFormat: string,
  dst: string,
  dstFormat: 'qcow2' | 'raw',
  onProgress?: (fraction: number) => void,
): Promise<void> {
  const args = ['convert', '-p', '-W', '-m', '8', '-f', srcFormat, '-O', dstFormat];
  if (dstFormat === 'qcow2') args.push('-o', 'cluster_size=131072,extended_l2=on');
  args.push(src, dst);
  await runConvert(args, src, onProgress);
  await syncFile(dst);
}

/**
 * QEMU's name for an image stored inside another file at a byte range (a VMDK inside an
 * OVA, which is an uncompressed tar): a raw node with offset and size under the format
 * QEMU probes or the caller gives with -f. Nothing is extracted (virt-v2v does the same).
 */
/** Opens whatever format QEMU finds there, backing included: for images from outside the site use untrustedImageName. */
export function tarMemberFilename(archive: string, member: { offset: number; size: number }): string {
  return `json:${JSON.stringify({ file: { driver: 'raw', offset: member.offset, size: member.size, file: { driver: 'file', filename: archive } } })}`;
}

/** Foreign formats mamori writes for people moving to VMware or Hyper-V. */
export type ExportFormat = 'vmdk' | 'vmdk-stream' | 'vhdx';

/**
 * Writes an image for another hypervisor: a monolithic sparse VMDK (Workstation, or
 * vmkfstools -i on ESXi), a streamOptimized VMDK (what an OVA carries), or a dynamic VHDX.
 * VMDKs say lsilogic, the SCSI adapter every VMware guest OS has a driver for. No -U:
 * qemu-img holds QEMU's image lock on the source, so no VM can start on it mid-copy.
 */
export async function exportImage(src: string, srcFormat: string, dst: string, format: ExportFormat, onProgress?: (fraction: number) => void): Promise<void> {
  const options: Record<ExportFormat, string[]> = {
    'vmdk': ['-O', 'vmdk', '-o', 'subformat=monolithicSparse,adapter_type=lsilogic'],
    'vmdk-stream': ['-O', 'vmdk', '-o', 'subformat=streamOptimized,adapter_type=lsilogic'],
    'vhdx': ['-O', 'vhdx', '-o', 'subformat=dynamic'],
  };
  await runConvert(['convert', '-p', '-f', srcFormat, ...options[format], src, dst], src, onProgress);
  await syncFile(dst);
}

async function runConvert(args: string[], src: string, onProgress?: (fraction: number) => void): Promise<void> {
  let buffered = '';
  const parse = (chunk: string): void => {
    buffered += chunk;
    const m = [...buffered.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)].at(-1);
    if (m && onProgress) onProgress(Number(m[1]) / 100);
    buffered = buffered.slice(-64);
  };
  try {
    await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000, onStdout: parse });
  } catch (e) {
    throw asImageError(e, src);
  }
}

/** `qemu-img check`: catches truncated or damaged images before they are used. */
export async function checkImage(path: string, format: string, label = path): Promise<void> {
  // Only formats with metadata to check; raw has none.
  if (!['qcow2', 'vmdk', 'vhdx', 'vpc', 'qed', 'vdi'].includes(format)) return;
  try {
    // qemu-img check exits 0 when clean, 3 for leaked clusters only (harmless), 63 when the
    // format has no check; 1 (could not complete, e.g. truncated) and 2 (corruption) refuse.
    await runProcess(QEMU_IMG, ['check', '-q', '-U', '-f', format, path], { timeoutMs: 300_000, okCodes: [0, 3, 63] });
  } catch (e) {
    if (isMamoriError(e, 'PROCESS_FAILED')) {
      throw new MamoriError('IMAGE_CORRUPT', `${label} is damaged and cannot be used: ${String(e.details?.['stderr'] ?? e.message).trim()}`, { cause: e });
    }
    throw e;
  }
}

/** Callers check existence and permissions with fs first; what remains is QEMU's own verdict. */
function asImageError(e: unknown, path: string): unknown {
  if (!isMamoriError(e, 'PROCESS_FAILED')) return e;
  const stderr = String(e.details?.['stderr'] ?? '').trim();
  return new MamoriError('IMAGE_UNREADABLE', `QEMU cannot read ${path}: ${stderr.split('\n').at(-1) ?? stderr}`, { cause: e, details: { path, stderr } });
}

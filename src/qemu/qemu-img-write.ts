/**
 * The one door to qemu-img, its writing half: new images and overlays in the site's qcow2
 * layouts, copies (convert, export, flatten), and the chain and header edits (commit, rebase,
 * persistent bitmaps). Reading (info, check, map, measure) is in qemu-img-read.ts, whose
 * header says how errors are mapped: the same rule holds here.
 */
import { syncFile } from '../core/durable-sync.js';
import { runProcess } from '../core/run-process.js';
import { QCOW2_LAYOUTS, type Qcow2Layout } from './qcow2-layouts.js';
import { QEMU_IMG, asImageError, untrustedImageName, type UntrustedImageSpec } from './qemu-img-read.js';

/** A backing file as written into an overlay's header: the name (absolute, or relative to the overlay) and its pinned format. */
export interface BackingRef {
  file: string;
  format: string;
}

/** Copies an untrusted image into a new site image (format pinned, backing cut); see convertImage. */
export async function convertUntrustedImage(
  spec: UntrustedImageSpec,
  dst: string,
  dstFormat: 'qcow2' | 'raw',
  onProgress?: (fraction: number) => void,
): Promise<void> {
  await convertImage(untrustedImageName(spec), spec.format, dst, dstFormat, onProgress);
}

/** A new site image: qcow2 in the site layout, or raw. */
export async function createImage(path: string, format: 'qcow2' | 'raw', sizeBytes: number): Promise<void> {
  const args =
    format === 'qcow2' ? createQcow2Args(path, { sizeBytes }) : ['create', '-q', '-f', 'raw', path, String(sizeBytes)];
  await runProcess(QEMU_IMG, args, { timeoutMs: 60_000 });
}

export interface Qcow2CreateOptions {
  /** Default `site`. */
  layout?: Qcow2Layout;
  backing?: BackingRef;
  /** -u: the backing is not opened (a host device a VM holds, or a name relative to a folder). */
  unsafe?: boolean;
  /** Without it the overlay takes its backing's size. */
  sizeBytes?: number;
}

/** `qemu-img create -f qcow2`: an image, or an overlay on `backing`. */
export async function createQcow2(path: string, opts: Qcow2CreateOptions = {}): Promise<void> {
  await runProcess(QEMU_IMG, createQcow2Args(path, opts), { timeoutMs: 30_000 });
}

function createQcow2Args(path: string, opts: Qcow2CreateOptions): string[] {
  const options = QCOW2_LAYOUTS[opts.layout ?? 'site'];
  return [
    'create',
    '-q',
    '-f',
    'qcow2',
    ...(options === null ? [] : ['-o', options]),
    ...(opts.unsafe === true ? ['-u'] : []),
    ...(opts.backing ? ['-b', opts.backing.file, '-F', opts.backing.format] : []),
    path,
    ...(opts.sizeBytes === undefined ? [] : [String(opts.sizeBytes)]),
  ];
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
  const args = convertArgs({
    src,
    srcFormat,
    dst,
    dstFormat,
    dstOptions: dstFormat === 'qcow2' ? QCOW2_LAYOUTS.site : null,
    progress: true,
    outOfOrder: true,
  });
  await runConvert(args, src, onProgress);
  await syncFile(dst);
}

/** Foreign formats mamori writes for people moving to VMware or Hyper-V. */
export type ExportFormat = 'vmdk' | 'vmdk-stream' | 'vhdx';

/**
 * Writes an image for another hypervisor: a monolithic sparse VMDK (Workstation, or
 * vmkfstools -i on ESXi), a streamOptimized VMDK (what an OVA carries), or a dynamic VHDX.
 * VMDKs say lsilogic, the SCSI adapter every VMware guest OS has a driver for. No -U:
 * qemu-img holds QEMU's image lock on the source, so no VM can start on it mid-copy.
 */
export async function exportImage(
  src: string,
  srcFormat: string,
  dst: string,
  format: ExportFormat,
  onProgress?: (fraction: number) => void,
): Promise<void> {
  const options: Record<ExportFormat, [string, string]> = {
    vmdk: ['vmdk', 'subformat=monolithicSparse,adapter_type=lsilogic'],
    'vmdk-stream': ['vmdk', 'subformat=streamOptimized,adapter_type=lsilogic'],
    vhdx: ['vhdx', 'subformat=dynamic'],
  };
  const [dstFormat, dstOptions] = options[format];
  await runConvert(convertArgs({ src, srcFormat, dst, dstFormat, dstOptions, progress: true }), src, onProgress);
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

/**
 * `qemu-img commit -d`: writes `top`'s data into the image below it (`base`, or its
 * backing), leaving `top` as it was (-d: the caller drops it right after).
 */
export async function commitImage(top: string, opts: { format?: string; base?: string } = {}): Promise<void> {
  const args = [
    'commit',
    '-q',
    '-d',
    ...(opts.format ? ['-f', opts.format] : []),
    ...(opts.base ? ['-b', opts.base] : []),
    top,
  ];
  await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000 });
}

/**
 * `qemu-img rebase -u` of a qcow2: rewrites the backing name and format in its header only,
 * for a caller that knows the new backing reads the same bytes as the old one.
 */
export async function rebaseUnsafe(
  image: string,
  backing: BackingRef,
  opts: { timeoutMs?: number } = {},
): Promise<void> {
  const args = ['rebase', '-q', '-u', '-f', 'qcow2', '-b', backing.file, '-F', backing.format, image];
  await runProcess(QEMU_IMG, args, { timeoutMs: opts.timeoutMs ?? 30_000 });
}

/**
 * `qemu-img rebase` (safe): writes into `image` what its old backing reads differently from
 * `backing` (null: no backing at all, so everything the old chain reads), then sets the name.
 */
export async function rebaseSafe(
  image: string,
  backing: BackingRef | null,
  opts: { format?: string } = {},
): Promise<void> {
  const args = [
    'rebase',
    '-q',
    ...(opts.format ? ['-f', opts.format] : []),
    '-b',
    backing?.file ?? '',
    ...(backing ? ['-F', backing.format] : []),
    image,
  ];
  await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000 });
}

/** Flattens `src` (with its backing chain) into one new qcow2 in `layout`; PROCESS_FAILED as is, no fsync (the caller syncs). */
export async function flattenToQcow2(
  src: string,
  srcFormat: string,
  dst: string,
  layout: Qcow2Layout,
  opts: { forceShare?: boolean } = {},
): Promise<void> {
  const args = convertArgs({
    src,
    srcFormat,
    dst,
    dstFormat: 'qcow2',
    dstOptions: QCOW2_LAYOUTS[layout],
    forceShare: opts.forceShare === true,
    outOfOrder: true,
  });
  await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000 });
}

/** Copies `src` into a raw file to be read byte by byte; PROCESS_FAILED as is. */
export async function convertToRaw(
  src: string,
  srcFormat: string,
  dst: string,
  opts: { forceShare?: boolean; timeoutMs?: number } = {},
): Promise<void> {
  const args = convertArgs({
    src,
    srcFormat,
    dst,
    dstFormat: 'raw',
    dstOptions: null,
    forceShare: opts.forceShare === true,
  });
  await runProcess(QEMU_IMG, args, { timeoutMs: opts.timeoutMs ?? 30 * 60_000 });
}

/** One `qemu-img bitmap` action; qemu-img runs them in order on one bitmap. */
export type BitmapEdit =
  | { op: 'add'; granularity: number; disabled?: boolean }
  | { op: 'remove' }
  | { op: 'clear' }
  | { op: 'enable' }
  | { op: 'disable' }
  | { op: 'merge'; source: string };

/** `qemu-img bitmap` on a qcow2 no process holds; PROCESS_FAILED as is (a lock conflict included). */
export async function editBitmap(file: string, name: string, actions: readonly BitmapEdit[]): Promise<void> {
  const args = ['bitmap'];
  for (const a of actions) {
    if (a.op === 'merge') args.push('--merge', a.source);
    else args.push(`--${a.op}`);
    // `--add --disable` adds a disabled bitmap.
    if (a.op === 'add' && a.disabled === true) args.push('--disable');
  }
  const add = actions.find((a) => a.op === 'add');
  if (add?.op === 'add') args.push('-g', String(add.granularity));
  args.push('-f', 'qcow2', file, name);
  await runProcess(QEMU_IMG, args, { timeoutMs: 60_000 });
}

interface ConvertSpec {
  src: string;
  srcFormat: string;
  dst: string;
  dstFormat: string;
  dstOptions: string | null;
  /** -p, parsed by runConvert. */
  progress?: boolean;
  forceShare?: boolean;
  /** -W -m 8: out-of-order writes over 8 coroutines, what makes a copy fast here. */
  outOfOrder?: boolean;
}

function convertArgs(c: ConvertSpec): string[] {
  return [
    'convert',
    ...(c.progress === true ? ['-p'] : []),
    ...(c.forceShare === true ? ['-U'] : []),
    ...(c.outOfOrder === true ? ['-W', '-m', '8'] : []),
    '-f',
    c.srcFormat,
    '-O',
    c.dstFormat,
    ...(c.dstOptions === null ? [] : ['-o', c.dstOptions]),
    c.src,
    c.dst,
  ];
}
